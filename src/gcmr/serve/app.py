"""The FastAPI app behind ``gcmr serve`` (see :mod:`gcmr.serve`): the search API over a
:class:`~gcmr.serve.batching.MicroBatcher` (concurrent requests decoded together), item
records and thumbnails (:mod:`gcmr.serve.items`), ``/metrics`` (:mod:`gcmr.serve.metrics`)
and the search page (``static/``).

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at
runtime, and the request model is local to :func:`create_app` (pydantic is an optional extra).
"""

import asyncio
import hmac
import html
import inspect
import json
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from gcmr.errors import ArtifactError, GcmrError
from gcmr.extras import require
from gcmr.search.base import (
    MAX_BEAM,
    MAX_K,
    check_int,
    check_search_args,
    safe_text,
    snippet,
)
from gcmr.serve.batching import BatchingConfig, BatchKey, MicroBatcher, ServerClosingError

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: 256 queries of 1,000 characters fit with room
DEFAULT_MAX_QUERY_CHARS = 1000  # far beyond what a tokenizer keeps (it truncates at ~32-64)
DEFAULT_MAX_QUERIES = 256  # per request: one batch of the beam search
DEFAULT_CHUNK_WORK = 4096  # queries x beam width searched in one batched search, at most
MAX_QUERIES = DEFAULT_MAX_QUERIES
MAX_DETAIL_CHARS = 1000  # an error message sent back is cut here (it never echoes a request)
MAX_ERRORS = 10  # validation errors listed in one answer
INLINE_HITS = 1000  # answers with at most this many hits are built on the event loop (< 1 ms)
MAX_ID_CHARS = 1000  # an item id (or source) in a request
MAX_CAPTIONS = 64  # captions of one added item


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask of the server (``gcmr serve`` flags, reported in /health).

    ``max_body_bytes`` bounds the request body (413 beyond it), ``max_query_chars`` each
    query's length, ``max_queries`` the queries of one POST. ``chunk_work`` bounds the work
    of one batched search: it holds at most ``chunk_work // width`` queries (width = max(k,
    beam); and at most :class:`~gcmr.serve.batching.BatchingConfig` ``max_batch``), so a
    large request is searched over several batches and a concurrent small request rides in
    the next one, not after the whole request. ``k`` and ``beam`` are bounded by
    the library's :data:`~gcmr.search.base.MAX_K` and :data:`~gcmr.search.base.MAX_BEAM`.
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    max_queries: int = DEFAULT_MAX_QUERIES
    chunk_work: int = DEFAULT_CHUNK_WORK

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            check_int(f"serve limit {name}", value)

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "max_k": MAX_K, "max_beam": MAX_BEAM}

    def chunk_size(self, k: int, beam: int | None) -> int:
        """Most queries of one batched search at ``k`` / ``beam`` (by ``chunk_work``)."""
        from gcmr.search.beam import DEFAULT_BEAM  # torch: imported when serving only

        width = max(k, beam if beam is not None else DEFAULT_BEAM)
        return max(1, self.chunk_work // width)


def short_detail(text: str) -> str:
    """An error message safe to send: UTF-8 encodable, at most ``MAX_DETAIL_CHARS``."""
    text = safe_text(text)
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "..."


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pydantic's validation errors without what would echo the request: each ``input`` cut
    to a short snippet, at most ``MAX_ERRORS`` errors (and a count of the rest)."""
    out = []
    for error in errors[:MAX_ERRORS]:
        item = {"loc": [part if isinstance(part, int) else short_detail(str(part))[:100]
                        for part in error.get("loc", ())],
                "msg": short_detail(str(error.get("msg", ""))),
                "type": str(error.get("type", ""))}
        if "input" in error:
            item["input"] = snippet(error["input"])
        out.append(item)
    if len(errors) > MAX_ERRORS:
        out.append({"loc": [], "msg": f"... and {len(errors) - MAX_ERRORS} more errors",
                    "type": "truncated"})
    return out


class BodyLimitMiddleware:
    """ASGI middleware that refuses, before the app parses anything, a body over
    ``max_bytes`` (413, also when it comes chunked without a Content-Length), a body or a
    query string that is not UTF-8 (400). The body, once read and checked, is passed on."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._check_headers(scope)
        if problem is not None:
            await _send_error(send, *problem)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_error(send, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            await _send_error(send, 400, f"the request body is not valid UTF-8 (byte "
                                         f"0x{body[exc.start]:02x} at offset {exc.start})")
            return
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"request body over the server's limit of {self.max_bytes:,} bytes"

    def _check_headers(self, scope: dict) -> tuple[int, str] | None:
        query = scope.get("query_string", b"")
        try:
            unquote_to_bytes(query.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return 400, "the query string is not valid UTF-8 (percent-encode UTF-8 text)"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return 400, "invalid Content-Length header"
                if length > self.max_bytes:
                    return 413, self._too_large()
        return None


async def _send_error(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


MIN_TOKEN_CHARS = 16  # a shorter update token is refused at start (guessable)
TOKEN_ENV = "GCMR_SERVE_TOKEN"  # where gcmr serve reads the update token when no file is given


def check_token(token: str | None) -> str | None:
    """The update token as given (None: live updates off), refused when it is too short to
    be a secret or not printable ASCII (it travels in an HTTP header)."""
    if token is None:
        return None
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable() \
            or " " in token:
        raise GcmrError(f"the update token must be at least {MIN_TOKEN_CHARS} printable ASCII "
                        f"characters without spaces (for example the output of "
                        f"`python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    return token


def supports(searcher: Any, what: str) -> bool:
    """Whether ``searcher`` can search by example (``"example"``: its ``search_rows`` takes
    ``like`` / ``vector``) or apply live updates (``"updates"``)."""
    if what == "updates":
        return callable(getattr(searcher, "add_items", None)) and \
            callable(getattr(searcher, "delete_items", None))
    try:
        params = inspect.signature(searcher.search_rows).parameters
    except (TypeError, ValueError):
        return False
    return "like" in params and "vector" in params


def create_app(model_dir: str | Path, *, index_path: str | Path | None = None,
               device: str = "auto", rerank: str | None = None,
               corpus_path: str | Path | None = None, limits: ServeLimits | None = None,
               batching: BatchingConfig | None = None, verify: bool = True,
               token: str | None = None) -> Any:
    """A FastAPI app serving the model at ``model_dir`` (loaded now, once, its files' sha256
    checked unless ``verify`` is False); ``rerank`` as in
    :func:`gcmr.search.load_searcher` (a model with a query head serves hybrid search);
    ``limits`` what one request may ask (default :class:`ServeLimits`), ``batching`` how
    concurrent requests are decoded together (default :class:`BatchingConfig`); ``token``
    turns on live updates (``POST /items``, ``DELETE /items/{id}``) for requests that send
    it as ``Authorization: Bearer TOKEN`` (None: updates are refused with 403)."""
    require("fastapi", "serve", purpose="gcmr serve")
    require("pydantic", "serve", purpose="gcmr serve")
    from gcmr.search import load_searcher
    from gcmr.search.dense import DenseSearcher

    searcher = load_searcher(model_dir, index_path=index_path, device=device, rerank=rerank,
                             corpus_path=corpus_path, verify=verify)
    kind = "dense" if isinstance(searcher, DenseSearcher) else "generative"
    return build_app(searcher, name=str(model_dir), kind=kind, limits=limits,
                     batching=batching, token=token)


def build_app(searcher: Any, *, name: str, kind: str = "generative",
              limits: ServeLimits | None = None,
              batching: BatchingConfig | None = None, token: str | None = None) -> Any:
    """The FastAPI app around a loaded :class:`~gcmr.search.Searcher` (what
    :func:`create_app` serves; tests give it a fake one). ``name`` is shown in /health.

    Searches go through one :class:`~gcmr.serve.batching.MicroBatcher` (``app.state.
    batcher``; its worker starts with the first search), which the app's lifespan closes at
    shutdown after finishing every queued request; ``app.state.metrics`` is the
    :class:`~gcmr.serve.metrics.ServeMetrics` behind ``/metrics``. Searches by example and
    live updates run on the batcher's worker between two batches
    (:meth:`~gcmr.serve.batching.MicroBatcher.call`), so an update never overlaps a search."""
    fastapi = require("fastapi", "serve", purpose="gcmr serve")
    pydantic = require("pydantic", "serve", purpose="gcmr serve")
    from typing import Annotated

    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    from gcmr.search import ranked_hits
    from gcmr.search.example import EXAMPLE_WEIGHT
    from gcmr.search.updates import NewItems, UnknownItemError, UpdateConflict
    from gcmr.serve.items import ItemCatalog
    from gcmr.serve.metrics import MetricsMiddleware, ServeMetrics

    limits = limits or ServeLimits()
    token = check_token(token)
    info = {"model": safe_text(name), "kind": kind}
    batching = batching or BatchingConfig()
    by_example, updatable = supports(searcher, "example"), supports(searcher, "updates")

    class View:
        """What answers read of the searcher's items, replaced whole after a live update
        (on the worker thread, between two searches)."""

        def __init__(self) -> None:
            self.refresh()

        def refresh(self) -> None:
            self.describe = searcher.item_descriptions()
            self.catalog = ItemCatalog(searcher, self.describe).keep_corpus_of(
                getattr(self, "catalog", None))
            index = getattr(searcher, "index", None)
            self.items = int(getattr(index, "num_live", len(searcher.item_ids)))

    view = View()

    def search_rows(queries: list[str], key: BatchKey) -> Any:
        return searcher.search_rows(queries, k=key.k, beam=key.beam,
                                    batch_size=max(1, len(queries)), **dict(key.options))

    metrics = ServeMetrics(queue_depth=lambda: batcher.pending)  # read when scraped
    batcher = MicroBatcher(search_rows, config=batching, on_batch=metrics.observe_batch,
                           chunk=lambda key: limits.chunk_size(key.k, key.beam))

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        await run_in_threadpool(batcher.close)  # graceful: every queued request is answered
    query_text = Annotated[str, pydantic.Field(min_length=1, max_length=limits.max_query_chars)]

    item_id_text = Annotated[str, pydantic.Field(min_length=1, max_length=MAX_ID_CHARS)]
    weight_field = pydantic.Field(EXAMPLE_WEIGHT, ge=0.0, le=1.0, description="a mixed text "
                                  "+ example query's weight of the example's cosine")

    class SearchRequest(pydantic.BaseModel):
        queries: list[query_text] | None = pydantic.Field(  # type: ignore[valid-type]
            None, min_length=1, max_length=limits.max_queries,
            description=f"1 to {limits.max_queries} non-empty queries of at most "
                        f"{limits.max_query_chars} characters (optional with like / vector)")
        k: int = pydantic.Field(10, ge=1, le=MAX_K, description="results per query")
        beam: int | None = pydantic.Field(None, ge=1, le=MAX_BEAM, description="beam width "
                                          "of a generative model (default max(10, k))")
        like: list[item_id_text] | None = pydantic.Field(  # type: ignore[valid-type]
            None, min_length=1, max_length=limits.max_queries,
            description="query by example: item ids ('more like this'), one result list each "
                        "(with queries: one per query, or one for all)")
        vector: list[list[float]] | None = pydantic.Field(
            None, min_length=1, max_length=limits.max_queries,
            description="query by example: item embeddings [Q, D] in the corpus's item space")
        example_weight: float = weight_field

    class NewItem(pydantic.BaseModel):
        id: item_id_text  # type: ignore[valid-type]
        captions: list[query_text] = pydantic.Field(  # type: ignore[valid-type]
            default_factory=list, max_length=MAX_CAPTIONS,
            description="its captions (the fine-tune's pseudo-queries)")
        embedding: list[float] = pydantic.Field(min_length=1, description="its embedding in "
                                                "the corpus's item space")
        source: str | None = pydantic.Field(None, max_length=MAX_ID_CHARS,
                                            description="where the media is (shown only)")

    class AddRequest(pydantic.BaseModel):
        items: list[NewItem] = pydantic.Field(min_length=1, max_length=limits.max_queries,
                                              description=f"1 to {limits.max_queries} items")

    app = fastapi.FastAPI(
        title="gcmr", summary="generative cross-modal retrieval", lifespan=lifespan,
        description=f"Limits: request body at most {limits.max_body_bytes:,} bytes (413 "
                    f"beyond), UTF-8 only (400 otherwise); at most {limits.max_queries} "
                    f"queries of {limits.max_query_chars} characters; k <= {MAX_K}, beam <= "
                    f"{MAX_BEAM}. Errors are 4xx with a short `detail`. Concurrent searches "
                    f"are decoded together: at most {batching.max_batch} queries per batched "
                    f"search (and {limits.chunk_work:,} queries x beam width), the first "
                    f"waiting at most {batching.max_wait_ms:g} ms for company.",
        # BodyLimitMiddleware answers these for every path, before any route runs
        responses={400: {"description": "the body or the query string is not valid UTF-8, "
                                        "or the Content-Length header is invalid"},
                   413: {"description": f"request body over {limits.max_body_bytes:,} bytes"}})
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    app.state.batcher, app.state.metrics = batcher, metrics
    too_large = {413: {"description": f"request body over {limits.max_body_bytes:,} bytes"}}

    class ErrorAnswer(pydantic.BaseModel):  # what every 4xx of a search holds
        detail: str | list[dict[str, Any]] = pydantic.Field(
            description="a short message, or the invalid fields (loc, msg, type, input cut "
                        "short)")

    search_errors = {**too_large, 422: {"model": ErrorAnswer, "description": "invalid "
                                        "request (a field, or a query the model refuses)"},
                     503: {"description": "the server is shutting down"}}

    def answer(queries: list[Any], scores: Any, rows: Any, k: int, took_ms: float,
               likes: list[str] | None = None) -> Any:
        hits = ranked_hits(searcher, scores, rows, view.describe)
        results = [{"query": q, "hits": h} for q, h in zip(queries, hits)]
        for i, result in enumerate(results if likes else ()):
            result["like"] = safe_text(likes[i if len(likes) > 1 else 0])
        return JSONResponse({"results": results, "k": k, "took_ms": round(took_ms, 2)})

    async def run(queries: list[str], k: int, beam: int | None) -> Any:
        t0 = time.perf_counter()
        try:  # the whole request is checked before any of it is queued
            check_search_args(queries, k=k, beam=beam)
            scores, rows = await asyncio.wrap_future(batcher.submit(queries, BatchKey(k, beam)))
        except ServerClosingError:
            raise
        except GcmrError as exc:
            raise fastapi.HTTPException(422, short_detail(str(exc))) from exc
        took = (time.perf_counter() - t0) * 1000
        if len(queries) * k <= INLINE_HITS:  # a small answer: no thread hop
            return answer(queries, scores, rows, k, took)
        # the hits (and their JSON) off the event loop: a 256 x 1000 answer takes a while
        return await run_in_threadpool(answer, queries, scores, rows, k, took)

    async def run_example(queries: list[str] | None, k: int, beam: int | None, *,
                          like: list[str] | None = None, vector: list[list[float]] | None = None,
                          weight: float = EXAMPLE_WEIGHT) -> Any:
        """A query by example (or mixed): one search on the worker between two batches."""
        if not by_example:
            raise fastapi.HTTPException(422, f"this {kind} model does not search by example "
                                             f"(like / vector): a generative model does")
        if like is not None and vector is not None:
            raise fastapi.HTTPException(422, "pass either like (item ids) or vector "
                                             "(embeddings), not both")
        t0 = time.perf_counter()

        def search() -> Any:
            return searcher.search_rows(queries, k=k, beam=beam, like=like, vector=vector,
                                        example_weight=weight)
        try:
            if queries is not None:
                check_search_args(queries, k=k, beam=beam)
            scores, rows = await asyncio.wrap_future(batcher.call(search))
        except ServerClosingError:
            raise
        except GcmrError as exc:
            raise fastapi.HTTPException(422, short_detail(str(exc))) from exc
        shown = list(queries) if queries is not None else [None] * len(scores)
        if len(shown) == 1 < len(scores):
            shown = shown * len(scores)
        took = (time.perf_counter() - t0) * 1000
        return await run_in_threadpool(answer, shown, scores, rows, k, took, like)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **info, "items": view.items, "limits": limits.as_dict(),
                "batching": batching.as_dict(),
                "features": {"example": by_example, "updates": updatable and token is not None}}

    @app.get("/search", responses=search_errors)
    async def search_one(q: str | None = fastapi.Query(
                             None, description="the text query (optional with like)",
                             min_length=1, max_length=limits.max_query_chars),
                         k: int = fastapi.Query(10, ge=1, le=MAX_K),
                         beam: int | None = fastapi.Query(None, ge=1, le=MAX_BEAM),
                         like: str | None = fastapi.Query(
                             None, description="an item id: items like it ('more like this'; "
                                               "with q: a mixed query)",
                             min_length=1, max_length=MAX_ID_CHARS),
                         example_weight: float = fastapi.Query(
                             EXAMPLE_WEIGHT, ge=0.0, le=1.0,
                             description="a mixed query's weight of the example")
                         ) -> dict[str, Any]:
        if like is not None:
            return await run_example(None if q is None else [q], k, beam, like=[like],
                                     weight=example_weight)
        if q is None:
            raise fastapi.HTTPException(422, "give a text query q, an item id like, or both")
        return await run([q], k, beam)

    @app.post("/search", responses=search_errors)
    async def search_batch(request: SearchRequest) -> dict[str, Any]:
        if request.like is not None or request.vector is not None:
            return await run_example(request.queries, request.k, request.beam,
                                     like=request.like, vector=request.vector,
                                     weight=request.example_weight)
        if request.queries is None:
            raise fastapi.HTTPException(422, "give queries, like (item ids) or vector "
                                             "(embeddings)")
        return await run(request.queries, request.k, request.beam)

    def authorize(authorization: str | None) -> None:
        """Refuse a live update unless the server has a token and the request sends it."""
        if not updatable:
            raise fastapi.HTTPException(422, f"this {kind} model has no live updates (add "
                                             f"and delete work on generative models)")
        if token is None:
            raise fastapi.HTTPException(403, "live updates are off: start gcmr serve with "
                                             f"--token-file FILE (or {TOKEN_ENV}) to allow them")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("utf-8", "replace"), token.encode()):
            raise fastapi.HTTPException(401, "missing or wrong update token (send "
                                             "Authorization: Bearer TOKEN)",
                                        headers={"WWW-Authenticate": "Bearer"})

    async def update(apply: Any) -> dict[str, Any]:
        """Run one live update on the worker between two batches, then refresh the view."""
        def step() -> dict[str, Any]:
            result = apply()
            view.refresh()  # the new items' captions, the live count
            return result.to_dict()
        try:
            return await asyncio.wrap_future(batcher.call(step))
        except ServerClosingError:
            raise
        except UnknownItemError as exc:
            raise fastapi.HTTPException(404, short_detail(str(exc))) from exc
        except (UpdateConflict, ArtifactError) as exc:  # a taken id; the model dir changed
            raise fastapi.HTTPException(409, short_detail(str(exc))) from exc
        except GcmrError as exc:
            raise fastapi.HTTPException(422, short_detail(str(exc))) from exc

    update_errors = {**too_large, 401: {"description": "no or a wrong update token"},
                     403: {"description": "live updates are off (no --token-file)"},
                     409: {"description": "an id already taken (or deleted), or the model "
                                          "directory changed on disk since it was loaded"},
                     422: {"model": ErrorAnswer, "description": "invalid items, or a model "
                                                                "without live updates"},
                     503: {"description": "the server is shutting down"}}

    @app.post("/items", status_code=201, responses=update_errors)
    async def add_items(request: AddRequest, authorization: str | None = fastapi.Header(
            None, description="Bearer TOKEN (the server's --token-file)")) -> dict[str, Any]:
        """Add items (live: retrievable by their identifiers at once; the model directory
        is replaced atomically by its next version)."""
        authorize(authorization)
        records = [item.model_dump() for item in request.items]
        items = NewItems.from_records(records, origin="POST /items")
        return await update(lambda: searcher.add_items(items, save=True))

    @app.delete("/items/{item_id:path}", responses={**update_errors, 404: {
        "description": "no such item (or already deleted)"}})
    async def delete_item(item_id: str, authorization: str | None = fastapi.Header(
            None, description="Bearer TOKEN (the server's --token-file)")) -> dict[str, Any]:
        """Delete an item (live: no search returns it from now on; saved atomically)."""
        authorize(authorization)
        return await update(lambda: searcher.delete_items([item_id], save=True))

    @app.get("/items/{item_id:path}/media", response_class=FileResponse,
             responses={404: {"description": "no such item, or no local image of it that "
                                             "lies in the corpus's media folder"}})
    def item_media(item_id: str) -> Any:
        """The item's image (its ``source``), when it is a local image file inside the
        corpus's media folder; 404 otherwise (see :mod:`gcmr.serve.items`)."""
        media = view.catalog.media(item_id)
        if media is None:
            raise fastapi.HTTPException(404, f"no image to send for item {snippet(item_id)}")
        return FileResponse(media.path, media_type=media.media_type,
                            headers={"X-Content-Type-Options": "nosniff",
                                     "Cache-Control": "max-age=3600"})

    @app.get("/items/{item_id:path}", responses={404: {"description": "no such item"}})
    def item(item_id: str) -> dict[str, Any]:
        """An item: ``{id, row, captions, source, identifier, media}`` (``identifier``: its
        codes, null for a dense model; ``media``: the thumbnail's URL path or null)."""
        record = view.catalog.describe(item_id)
        if record is None:
            raise fastapi.HTTPException(404, f"no item {snippet(item_id)}")
        return record

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}},
                              "description": "Prometheus text format"}})
    def metrics_text() -> Any:
        return Response(metrics.render(), media_type=metrics.content_type)

    page_html = PAGE.replace("{{MAX_K}}", str(MAX_K)).replace(
        "{{MAX_QUERY_CHARS}}", str(limits.max_query_chars)).replace(
        "{{MODEL}}", html.escape(f"{info['model']} ({kind}, {view.items:,} items)"))

    @app.get("/", response_class=HTMLResponse)
    def page() -> Any:
        return HTMLResponse(page_html, headers=PAGE_HEADERS)

    @app.get("/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Any:
        if name not in ASSETS:
            raise fastapi.HTTPException(404, "no such asset")
        media_type, text = ASSETS[name]
        return Response(text, media_type=media_type,
                        headers={"X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})

    @app.exception_handler(ServerClosingError)
    def closing(_request: Any, exc: ServerClosingError) -> Any:
        return JSONResponse(status_code=503, content={"detail": short_detail(str(exc))},
                            headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request: Any, exc: Any) -> Any:
        return JSONResponse(status_code=422, content={"detail": validation_details(
            list(exc.errors()))})

    @app.exception_handler(GcmrError)
    def gcmr_error(_request: Any, exc: GcmrError) -> Any:
        return JSONResponse(status_code=422, content={"detail": short_detail(str(exc))})

    return app


def serve(model_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          index_path: str | Path | None = None, device: str = "auto",
          rerank: str | None = None, corpus_path: str | Path | None = None,
          limits: ServeLimits | None = None, batching: BatchingConfig | None = None,
          verify: bool = True, token: str | None = None) -> None:
    """Run the app with uvicorn until interrupted (on SIGINT / SIGTERM uvicorn stops taking
    connections, finishes the requests in progress, and the lifespan drains the queue)."""
    uvicorn = require("uvicorn", "serve", purpose="gcmr serve")
    app = create_app(model_dir, index_path=index_path, device=device, rerank=rerank,
                     corpus_path=corpus_path, limits=limits, batching=batching,
                     verify=verify, token=token)
    uvicorn.run(app, host=host, port=port, log_level="info")


def _asset(name: str) -> str:
    return (resources.files("gcmr.serve") / "static" / name).read_text(encoding="utf-8")


PAGE = _asset("page.html")
ASSETS = {"page.js": ("text/javascript; charset=utf-8", _asset("page.js")),
          "page.css": ("text/css; charset=utf-8", _asset("page.css"))}
# the page runs only its own script and style, shows images from this server only
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self'; "
                                           "object-src 'none'; base-uri 'none'; "
                                           "frame-ancestors 'none'; form-action 'self'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
