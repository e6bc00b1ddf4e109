"""Search: constrained beam search, the generative Retriever, dense baselines."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from gcmr.errors import ArtifactError, safe_text


@runtime_checkable
class Searcher(Protocol):
    """What every gcmr searcher offers (generative :class:`~gcmr.search.retriever.Retriever`,
    :class:`~gcmr.search.dense.DenseRetriever`, :class:`~gcmr.search.dense.ZeroShotSearcher`):
    faiss-shaped batch search over one corpus.

    ``beam`` follows :func:`gcmr.search.beam.effective_beam` for generative searchers
    (``None`` = max(10, k)); dense searchers have none and accept only ``None``.
    ``candidates`` restricts the pool to those corpus rows.
    """

    @property
    def item_ids(self) -> list[str]: ...

    @property
    def corpus_path(self) -> Path: ...

    @property
    def corpus_fingerprint(self) -> str: ...

    def search(self, queries: str | Sequence[str], *, k: int = 10, beam: int | None = None,
               candidates: Any = None) -> tuple[Any, Any]:
        """``(scores float32 [Q, k], item_ids object [Q, k])``, ``""`` padding."""
        ...

    def search_rows(self, queries: Sequence[str], *, k: int = 10, beam: int | None = None,
                    candidates: Any = None, batch_size: int = 256) -> tuple[Any, Any]:
        """``(scores float32 [Q, k], rows int64 [Q, k])``, -inf / -1 padding."""
        ...

    def item_descriptions(self) -> Callable[[int], str]:
        """``row -> first caption or source`` for display."""
        ...


def load_searcher(model_dir: str | Path, *, index_path: str | Path | None = None,
                  device: str = "auto", rerank: str | None = None,
                  corpus_path: str | Path | None = None, verify: bool = True) -> Searcher:
    """Load any trained model directory by its manifest format (``verify``: check the
    recorded sha256 of its files and its index's).

    ``gcmr-model`` (generative: CART / AVG) -> :class:`~gcmr.search.retriever.Retriever`
    (``rerank``: ``hybrid`` / ``none``, default the model's own);
    ``gcmr-dense`` (dual tower) -> :class:`~gcmr.search.dense.DenseRetriever`.
    ``corpus_path`` replaces the corpus location recorded in the manifest.
    """
    from gcmr.model.io import DENSE_FORMAT, MODEL_FORMAT, manifest_format

    fmt = manifest_format(model_dir)
    if fmt == MODEL_FORMAT:
        from gcmr.search.retriever import Retriever

        return Retriever.load(model_dir, index_path=index_path, device=device, rerank=rerank,
                              corpus_path=corpus_path, verify=verify)
    if fmt == DENSE_FORMAT:
        from gcmr.errors import ConfigError
        from gcmr.search.dense import DenseRetriever

        if rerank is not None:
            raise ConfigError(f"{model_dir} is a dense model: it ranks every item and has "
                              f"nothing to rerank (--rerank is for generative models)")
        return DenseRetriever.load(model_dir, device=device, corpus_path=corpus_path,
                                   verify=verify)
    raise ArtifactError(f"{Path(model_dir) / 'manifest.json'}: format {fmt!r} is not a model "
                        f"gcmr can search with (expected {MODEL_FORMAT} or {DENSE_FORMAT})")


def ranked_hits(searcher: Searcher, scores: Any, rows: Any, describe: Any) -> list[list[dict]]:
    """Per query, the ranked results of ``search_rows`` as dicts ``{rank, id, score,
    caption}`` (padding dropped); ``describe`` maps an item row to its caption or source.
    Ids and captions are for display: a lone surrogate a corpus holds is escaped
    (:func:`~gcmr.errors.safe_text`), so the hits can always be printed and sent as JSON."""
    ids = searcher.item_ids
    return [[{"rank": rank + 1, "id": safe_text(ids[int(r)]), "score": round(float(s), 5),
              "caption": safe_text(describe(int(r)))}
             for rank, (s, r) in enumerate(zip(srow, rrow)) if r >= 0]
            for srow, rrow in zip(scores, rows)]


__all__ = ["Searcher", "load_searcher", "ranked_hits"]
