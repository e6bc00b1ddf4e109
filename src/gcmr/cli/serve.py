"""``gcmr serve``: an HTTP API and search page over a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from gcmr.cli.common import positive_int
from gcmr.cli.retrieval import add_rerank_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (API + search page)",
                       description="Serve a generative (CART / AVG) or dense model directory "
                       "with FastAPI: GET /health, GET /search?q=...&k=10, POST /search "
                       "{\"queries\": [...], \"k\": 10, \"beam\": null}, and a search page at /. "
                       "Needs the serve extra: pip install 'gcmr[serve]'.")
    p.add_argument("model", type=Path, help="model directory (gcmr train or train-dense)")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    p.add_argument("--index", type=Path, help="index directory (default: the model's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--corpus", type=Path, help="corpus directory, when it has moved since "
                   "training")
    add_rerank_option(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from gcmr.serve.app import serve

    serve(args.model, host=args.host, port=args.port, index_path=args.index, device=args.device,
          rerank=args.rerank, corpus_path=args.corpus)
    return 0
