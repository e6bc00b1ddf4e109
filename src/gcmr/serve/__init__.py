"""HTTP API and a search page over a trained model (``gcmr serve``; the ``serve`` extra).

:func:`create_app` builds a FastAPI app around any model directory :func:`gcmr.search.
load_searcher` opens (generative CART / AVG or a dense dual tower):

- ``GET /health``: the model, its kind and number of items;
- ``GET /search?q=...&k=10[&beam=20]``: one query;
- ``POST /search`` ``{"queries": [...], "k": 10, "beam": null}``: a batch, decoded together;
- ``GET /``: a small page with a search box.

Bad input (an empty query, k < 1, too many queries) is answered with status 422 and a message
naming the field; the model is loaded once, before the first request.
"""

from __future__ import annotations

from gcmr.serve.app import create_app

__all__ = ["create_app"]
