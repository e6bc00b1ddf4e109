"""The FastAPI app behind ``gcmr serve`` (see :mod:`gcmr.serve`).

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at
runtime, and the request model is local to :func:`create_app` (pydantic is an optional extra).
"""

import html
import threading
import time
from pathlib import Path
from typing import Any

from gcmr.errors import GcmrError
from gcmr.extras import require

MAX_QUERIES = 256  # per request: one batch of the beam search
MAX_K = 1000


def create_app(model_dir: str | Path, *, index_path: str | Path | None = None,
               device: str = "auto", rerank: str | None = None,
               corpus_path: str | Path | None = None) -> Any:
    """A FastAPI app serving the model at ``model_dir`` (loaded now, once); ``rerank`` as in
    :func:`gcmr.search.load_searcher` (a model with a query head serves hybrid search)."""
    fastapi = require("fastapi", "serve", purpose="gcmr serve")
    pydantic = require("pydantic", "serve", purpose="gcmr serve")
    from fastapi.responses import HTMLResponse, JSONResponse

    from gcmr.search import load_searcher, ranked_hits
    from gcmr.search.dense import DenseRetriever

    searcher = load_searcher(model_dir, index_path=index_path, device=device, rerank=rerank,
                             corpus_path=corpus_path)
    describe = searcher.item_descriptions()
    kind = "dense" if isinstance(searcher, DenseRetriever) else "generative"
    info = {"model": str(model_dir), "kind": kind, "items": len(searcher.item_ids)}
    lock = threading.Lock()  # one search at a time: a search already uses every core

    class SearchRequest(pydantic.BaseModel):
        queries: list[str] = pydantic.Field(min_length=1, max_length=MAX_QUERIES)
        k: int = pydantic.Field(10, ge=1, le=MAX_K)
        beam: int | None = pydantic.Field(None, ge=1, le=MAX_K)

    app = fastapi.FastAPI(title="gcmr", summary="generative cross-modal retrieval")

    def run(queries: list[str], k: int, beam: int | None) -> dict[str, Any]:
        empty = [i for i, q in enumerate(queries) if not q.strip()]
        if empty:
            raise fastapi.HTTPException(422, f"queries[{empty[0]}] is empty")
        t0 = time.perf_counter()
        try:
            with lock:
                scores, rows = searcher.search_rows(queries, k=k, beam=beam)
        except GcmrError as exc:
            raise fastapi.HTTPException(422, str(exc)) from exc
        took = (time.perf_counter() - t0) * 1000
        hits = ranked_hits(searcher, scores, rows, describe)
        return {"results": [{"query": q, "hits": h} for q, h in zip(queries, hits)],
                "k": k, "took_ms": round(took, 2)}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **info}

    @app.get("/search")
    def search_one(q: str = fastapi.Query(..., description="the text query"),
                   k: int = fastapi.Query(10, ge=1, le=MAX_K),
                   beam: int | None = fastapi.Query(None, ge=1, le=MAX_K)) -> dict[str, Any]:
        return run([q], k, beam)

    @app.post("/search")
    def search_batch(request: SearchRequest) -> dict[str, Any]:
        return run(request.queries, request.k, request.beam)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("{{MODEL}}", html.escape(f"{info['model']} ({kind}, "
                                                     f"{info['items']:,} items)"))

    @app.exception_handler(GcmrError)
    def gcmr_error(_request: Any, exc: GcmrError) -> Any:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    return app


def serve(model_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000,
          index_path: str | Path | None = None, device: str = "auto",
          rerank: str | None = None, corpus_path: str | Path | None = None) -> None:
    """Run the app with uvicorn until interrupted."""
    uvicorn = require("uvicorn", "serve", purpose="gcmr serve")
    app = create_app(model_dir, index_path=index_path, device=device, rerank=rerank,
                     corpus_path=corpus_path)
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
 <input id="k" type="number" value="10" min="1" max="1000" style="width:4rem">
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
