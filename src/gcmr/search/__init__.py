"""Search: constrained beam search, the generative Retriever, dense baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gcmr.errors import ArtifactError


def load_searcher(model_dir: str | Path, *, index_path: str | Path | None = None,
                  device: str = "auto") -> Any:
    """Load any trained model directory by its manifest format.

    ``gcmr-model`` (generative: CART / AVG) -> :class:`~gcmr.search.retriever.Retriever`;
    ``gcmr-dense`` (dual tower) -> :class:`~gcmr.search.dense.DenseRetriever`. Both offer
    ``search``/``search_rows``, ``item_ids``, ``item_descriptions()`` and the corpus identity.
    """
    path = Path(model_dir) / "manifest.json"
    try:
        fmt = json.loads(path.read_text(encoding="utf-8")).get("format")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing manifest; is {model_dir} a model directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise ArtifactError(f"{path}: corrupted manifest ({exc})") from exc
    if fmt == "gcmr-model":
        from gcmr.search.retriever import Retriever

        return Retriever.load(model_dir, index_path=index_path, device=device)
    if fmt == "gcmr-dense":
        from gcmr.search.dense import DenseRetriever

        return DenseRetriever.load(model_dir, device=device)
    raise ArtifactError(f"{path}: format {fmt!r} is not a model gcmr can search with "
                        f"(expected gcmr-model or gcmr-dense)")


def ranked_hits(searcher: Any, scores: Any, rows: Any, describe: Any) -> list[list[dict]]:
    """Per query, the ranked results of ``search_rows`` as dicts ``{rank, id, score,
    caption}`` (padding dropped); ``describe`` maps an item row to its caption or source."""
    ids = searcher.item_ids
    return [[{"rank": rank + 1, "id": ids[int(r)], "score": round(float(s), 5),
              "caption": describe(int(r))}
             for rank, (s, r) in enumerate(zip(srow, rrow)) if r >= 0]
            for srow, rrow in zip(scores, rows)]


__all__ = ["load_searcher", "ranked_hits"]
