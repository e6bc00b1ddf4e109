"""``gcmr serve``: an HTTP API and search page over a trained model."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gcmr.cli.common import bounded_int, nonneg_float, positive_int
from gcmr.cli.retrieval import add_rerank_option, add_verify_option, require_dir
from gcmr.errors import GcmrError
from gcmr.search.base import MAX_BEAM, MAX_K
from gcmr.serve.app import MIN_TOKEN_CHARS, TOKEN_ENV, ServeLimits, check_token
from gcmr.serve.batching import MAX_BATCH_LIMIT, MAX_WAIT_LIMIT_MS, BatchingConfig

_DEFAULTS = ServeLimits()
_BATCHING = BatchingConfig()


def wait_ms(text: str) -> float:
    """An argparse type: milliseconds in ``[0, MAX_WAIT_LIMIT_MS]``."""
    value = nonneg_float(text)
    if value > MAX_WAIT_LIMIT_MS:
        raise argparse.ArgumentTypeError(f"expected milliseconds in [0, "
                                         f"{MAX_WAIT_LIMIT_MS:g}], got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (API + search page)",
                       description="Serve a generative (CART / AVG) or dense model directory "
                       "with FastAPI: GET /health, GET /search?q=...&k=10, POST /search "
                       "{\"queries\": [...], \"k\": 10, \"beam\": null}, and a search page at /. "
                       "Requests are bounded (body size, query length, queries per request; "
                       f"k <= {MAX_K}, beam <= {MAX_BEAM}); concurrent requests are "
                       "decoded together in batched searches (micro-batching), a large request "
                       "over several batches so other clients are served in between. "
                       "GET /items/ID, /items/ID/media, /metrics (Prometheus). "
                       "Needs the serve extra: pip install 'gcmr[serve]'.")
    p.add_argument("model", type=Path, help="model directory (gcmr train or train-dense)")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    p.add_argument("--index", type=Path, help="index directory (default: the model's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--corpus", type=Path, help="corpus directory, when it has moved since "
                   "training")
    add_rerank_option(p)
    add_verify_option(p)
    g = p.add_argument_group("request limits (reported in /health and the OpenAPI schema)")
    g.add_argument("--max-body-bytes", type=positive_int, default=_DEFAULTS.max_body_bytes,
                   help="largest request body; bigger ones get 413 (default %(default)s)")
    g.add_argument("--max-query-chars", type=positive_int, default=_DEFAULTS.max_query_chars,
                   help="longest query, in characters (default %(default)s)")
    g.add_argument("--max-queries", type=positive_int, default=_DEFAULTS.max_queries,
                   help="most queries in one POST /search (default %(default)s)")
    g.add_argument("--chunk-work", type=positive_int, default=_DEFAULTS.chunk_work,
                   help="queries x beam width in one batched search, at most; a larger "
                   "request is split so concurrent requests interleave (default %(default)s)")
    u = p.add_argument_group("live updates (POST /items, DELETE /items/ID)")
    u.add_argument("--token-file", type=Path,
                   help="file holding the secret token that POST /items and DELETE /items/ID "
                   "must send as 'Authorization: Bearer TOKEN' (at least "
                   f"{MIN_TOKEN_CHARS} characters); default: the {TOKEN_ENV} environment "
                   "variable; neither: updates are refused (403)")
    b = p.add_argument_group("micro-batching (reported in /health)")
    b.add_argument("--max-batch", type=bounded_int(MAX_BATCH_LIMIT),
                   default=_BATCHING.max_batch,
                   help="most queries decoded together in one batched search; 1 = no batching "
                   "(default %(default)s)")
    b.add_argument("--max-wait-ms", type=wait_ms, default=_BATCHING.max_wait_ms,
                   help="how long the first query of a batch waits for others, in "
                   f"milliseconds, at most {MAX_WAIT_LIMIT_MS:g} (default %(default)s)")
    p.set_defaults(func=cmd_serve)


def read_token(path: Path | None) -> str | None:
    """The update token: the file's first line, else ``$GCMR_SERVE_TOKEN``, else None
    (checked by :func:`gcmr.serve.app.check_token`)."""
    if path is None:
        return os.environ.get(TOKEN_ENV) or None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GcmrError(f"--token-file {path}: cannot read it ({exc})") from exc
    token = text.strip().splitlines()[0] if text.strip() else ""
    if not token:
        raise GcmrError(f"--token-file {path}: the file is empty")
    return token


def cmd_serve(args: argparse.Namespace) -> int:
    from gcmr.serve.app import serve

    for path, what in ((args.model, "model"), (args.index, "index"), (args.corpus, "corpus")):
        require_dir(path, what)
    limits = ServeLimits(max_body_bytes=args.max_body_bytes, max_query_chars=args.max_query_chars,
                         max_queries=args.max_queries, chunk_work=args.chunk_work)
    batching = BatchingConfig(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    serve(args.model, host=args.host, port=args.port, index_path=args.index, device=args.device,
          rerank=args.rerank, corpus_path=args.corpus, limits=limits, batching=batching,
          verify=not args.no_verify, token=check_token(read_token(args.token_file)))
    return 0
