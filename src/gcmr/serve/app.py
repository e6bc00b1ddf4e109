"""The FastAPI app behind ``gcmr serve`` (see :mod:`gcmr.serve`).

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at
runtime, and the request model is local to :func:`create_app` (pydantic is an optional extra).
"""

import html
import json
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from gcmr.errors import GcmrError
from gcmr.extras import require
from gcmr.search.base import (
    MAX_BEAM,
    MAX_K,
    check_int,
    check_search_args,
    safe_text,
    snippet,
)

DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: 256 queries of 1,000 characters fit with room
DEFAULT_MAX_QUERY_CHARS = 1000  # far beyond what a tokenizer keeps (it truncates at ~32-64)
DEFAULT_MAX_QUERIES = 256  # per request: one batch of the beam search
DEFAULT_CHUNK_WORK = 4096  # queries x beam width searched per hold of the search lock
MAX_QUERIES = DEFAULT_MAX_QUERIES
MAX_DETAIL_CHARS = 1000  # an error message sent back is cut here (it never echoes a request)
MAX_ERRORS = 10  # validation errors listed in one answer


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask of the server (``gcmr serve`` flags, reported in /health).

    ``max_body_bytes`` bounds the request body (413 beyond it), ``max_query_chars`` each
    query's length, ``max_queries`` the queries of one POST. ``chunk_work`` bounds one hold
    of the search lock: a batch is searched in chunks of ``chunk_work // width`` queries
    (width = max(k, beam)) and the lock is released between chunks, so a concurrent small
    request waits for one chunk, not for the whole batch. ``k`` and ``beam`` are bounded by
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
        """Queries searched per hold of the lock for a request at ``k`` / ``beam``."""
        from gcmr.search.beam import DEFAULT_BEAM  # torch: imported when serving only

        width = max(k, beam if beam is not None else DEFAULT_BEAM)
        return max(1, self.chunk_work // width)


class FairLock:
    """A first-come, first-served lock: a release hands the lock to the longest waiter.

    ``threading.Lock`` lets the releasing thread take it straight back; with this lock a
    request that releases between chunks queues behind the requests that arrived meanwhile.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Event] = deque()

    def acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiters.append(turn)
        try:
            turn.wait()
        except BaseException:  # interrupted: give up the place, or the lock if handed over
            with self._mutex:
                if turn in self._waiters:
                    self._waiters.remove(turn)
                    raise
            self.release()
            raise

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()  # ownership passes on; _held stays True
            else:
                self._held = False

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def search_in_chunks(searcher: Any, lock: Any, queries: list[str], *, k: int,
                     beam: int | None, chunk: int) -> tuple[Any, Any]:
    """``searcher.search_rows`` over ``queries`` in chunks of ``chunk``, each under ``lock``
    (released between chunks, so other requests interleave); the rows concatenated."""
    import numpy as np

    scores, rows = [], []
    for start in range(0, len(queries), chunk):
        with lock:
            s, r = searcher.search_rows(queries[start:start + chunk], k=k, beam=beam)
        scores.append(s)
        rows.append(r)
    return np.concatenate(scores), np.concatenate(rows)


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


def create_app(model_dir: str | Path, *, index_path: str | Path | None = None,
               device: str = "auto", rerank: str | None = None,
               corpus_path: str | Path | None = None, limits: ServeLimits | None = None,
               verify: bool = True) -> Any:
    """A FastAPI app serving the model at ``model_dir`` (loaded now, once, its files' sha256
    checked unless ``verify`` is False); ``rerank`` as in
    :func:`gcmr.search.load_searcher` (a model with a query head serves hybrid search);
    ``limits`` what one request may ask (default :class:`ServeLimits`)."""
    require("fastapi", "serve", purpose="gcmr serve")
    require("pydantic", "serve", purpose="gcmr serve")
    from gcmr.search import load_searcher
    from gcmr.search.dense import DenseSearcher

    searcher = load_searcher(model_dir, index_path=index_path, device=device, rerank=rerank,
                             corpus_path=corpus_path, verify=verify)
    kind = "dense" if isinstance(searcher, DenseSearcher) else "generative"
    return build_app(searcher, name=str(model_dir), kind=kind, limits=limits)


def build_app(searcher: Any, *, name: str, kind: str = "generative",
              limits: ServeLimits | None = None) -> Any:
    """The FastAPI app around a loaded :class:`~gcmr.search.Searcher` (what
    :func:`create_app` serves; tests give it a fake one). ``name`` is shown in /health."""
    fastapi = require("fastapi", "serve", purpose="gcmr serve")
    pydantic = require("pydantic", "serve", purpose="gcmr serve")
    from typing import Annotated

    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse

    from gcmr.search import ranked_hits

    limits = limits or ServeLimits()
    describe = searcher.item_descriptions()
    info = {"model": name, "kind": kind, "items": len(searcher.item_ids)}
    lock = FairLock()  # one search at a time (a search already uses every core), fairly
    query_text = Annotated[str, pydantic.Field(min_length=1, max_length=limits.max_query_chars)]

    class SearchRequest(pydantic.BaseModel):
        queries: list[query_text] = pydantic.Field(  # type: ignore[valid-type]
            min_length=1, max_length=limits.max_queries,
            description=f"1 to {limits.max_queries} non-empty queries of at most "
                        f"{limits.max_query_chars} characters")
        k: int = pydantic.Field(10, ge=1, le=MAX_K, description="results per query")
        beam: int | None = pydantic.Field(None, ge=1, le=MAX_BEAM, description="beam width "
                                          "of a generative model (default max(10, k))")

    app = fastapi.FastAPI(
        title="gcmr", summary="generative cross-modal retrieval",
        description=f"Limits: request body at most {limits.max_body_bytes:,} bytes (413 "
                    f"beyond), UTF-8 only (400 otherwise); at most {limits.max_queries} "
                    f"queries of {limits.max_query_chars} characters; k <= {MAX_K}, beam <= "
                    f"{MAX_BEAM}. Errors are 4xx with a short `detail`.")
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes)
    too_large = {413: {"description": f"request body over {limits.max_body_bytes:,} bytes"}}

    def run(queries: list[str], k: int, beam: int | None) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:  # the whole request is checked before any of it is searched
            check_search_args(queries, k=k, beam=beam)
            scores, rows = search_in_chunks(searcher, lock, queries, k=k, beam=beam,
                                            chunk=limits.chunk_size(k, beam))
        except GcmrError as exc:
            raise fastapi.HTTPException(422, short_detail(str(exc))) from exc
        took = (time.perf_counter() - t0) * 1000
        hits = ranked_hits(searcher, scores, rows, describe)
        return {"results": [{"query": q, "hits": h} for q, h in zip(queries, hits)],
                "k": k, "took_ms": round(took, 2)}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **info, "limits": limits.as_dict()}

    @app.get("/search", responses=too_large)
    def search_one(q: str = fastapi.Query(..., description="the text query", min_length=1,
                                          max_length=limits.max_query_chars),
                   k: int = fastapi.Query(10, ge=1, le=MAX_K),
                   beam: int | None = fastapi.Query(None, ge=1, le=MAX_BEAM)) -> dict[str, Any]:
        return run([q], k, beam)

    @app.post("/search", responses=too_large)
    def search_batch(request: SearchRequest) -> dict[str, Any]:
        return run(request.queries, request.k, request.beam)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("{{MAX_K}}", str(MAX_K)).replace(
            "{{MODEL}}", html.escape(f"{info['model']} ({kind}, {info['items']:,} items)"))

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
          limits: ServeLimits | None = None, verify: bool = True) -> None:
    """Run the app with uvicorn until interrupted."""
    uvicorn = require("uvicorn", "serve", purpose="gcmr serve")
    app = create_app(model_dir, index_path=index_path, device=device, rerank=rerank,
                     corpus_path=corpus_path, limits=limits, verify=verify)
    uvicorn.run(app, host=host, port=port, log_level="info")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gcmr search</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; }
 input[type=text] { width: 70%; font-size: 1.1rem; padding: .3rem; }
 td, th { padding: .2rem .6rem; text-align: left; } .muted { color: #666; }
</style></head>
<body>
<h1>gcmr</h1><p class="muted">{{MODEL}}</p>
<form id="f"><input id="q" type="text" placeholder="a dog running on the beach" autofocus>
 <input id="k" type="number" value="10" min="1" max="{{MAX_K}}" style="width:4rem">
 <button>search</button></form>
<p id="status" class="muted"></p>
<table><thead><tr><th>#</th><th>item</th><th>score</th><th>caption / source</th></tr></thead>
<tbody id="out"></tbody></table>
<script>
const f = document.getElementById("f"), out = document.getElementById("out"),
      status = document.getElementById("status");
f.addEventListener("submit", async (e) => {
  e.preventDefault();
  const q = document.getElementById("q").value, k = document.getElementById("k").value;
  const r = await fetch(`/search?q=${encodeURIComponent(q)}&k=${k}`);
  const body = await r.json();
  out.replaceChildren();
  if (!r.ok) { status.textContent = JSON.stringify(body.detail); return; }
  status.textContent = `${body.took_ms} ms`;
  for (const h of body.results[0].hits) {
    const tr = document.createElement("tr");
    for (const v of [h.rank, h.id, h.score.toFixed(3), h.caption]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    out.appendChild(tr);
  }
});
</script></body></html>
"""
