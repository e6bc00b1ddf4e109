"""What every searcher over one corpus shares: the corpus identity (path, fingerprint), the
item ids in row order, captions for display, and ``search`` (ids) on top of ``search_rows``
(rows). A subclass implements ``search_rows``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.errors import CorpusError


def read_item_ids(corpus_path: Path, num_items: int) -> list[str]:
    """Item ids in row order from ``items.jsonl`` (the embedding rows' names), validated."""
    from gcmr.corpus import read_items

    path = Path(corpus_path) / "items.jsonl"
    if not path.is_file():
        raise CorpusError(f"{path}: missing; the model's corpus has moved (pass --corpus)")
    ids, _, _ = read_items(path, load_captions=False)
    if len(ids) != num_items:
        raise CorpusError(f"{path}: {len(ids)} items but the embeddings have {num_items} rows")
    return ids


def item_descriptions(corpus_path: Path):
    """A ``row -> text`` lookup of each item's first caption (or its source) for display.

    Reads ``items.jsonl`` once through the validated corpus reader; returns a function giving
    "" when the corpus is unavailable, and raises :class:`CorpusError` (file, line, field)
    when it is there but malformed.
    """
    from gcmr.corpus import read_items

    path = Path(corpus_path) / "items.jsonl"
    if not path.is_file():
        return lambda row: ""
    _, captions, sources = read_items(path)
    texts = [caps[0] if caps else str(src or "") for caps, src in zip(captions, sources)]
    return lambda row: texts[row] if 0 <= row < len(texts) else ""


def rows_to_ids(item_ids: list[str], rows: np.ndarray) -> np.ndarray:
    """Item ids (object array) of ``rows``, ``""`` where a row is -1 padding."""
    ids = np.asarray(list(item_ids) + [""], dtype=object)
    return ids[np.where(rows >= 0, rows, len(ids) - 1)]


class CorpusSearcher:
    """Base of the searchers that rank one corpus's items (see the module docstring)."""

    def __init__(self, *, corpus_path: str | Path, corpus_fingerprint: str,
                 item_ids: list[str] | None = None, num_items: int | None = None) -> None:
        """``item_ids`` in row order when the caller has them; else they are read from the
        corpus on first use (``num_items`` rows expected)."""
        self._corpus_path = Path(corpus_path)
        self._fingerprint = corpus_fingerprint
        self._item_ids = item_ids
        self._num_items = num_items

    @property
    def corpus_path(self) -> Path:
        return self._corpus_path

    @property
    def corpus_fingerprint(self) -> str:
        return self._fingerprint

    @property
    def item_ids(self) -> list[str]:
        if self._item_ids is None:
            self._item_ids = read_item_ids(self._corpus_path, int(self._num_items or 0))
        return self._item_ids

    def item_descriptions(self):
        """``row -> first caption or source`` for display (empty when the corpus is gone)."""
        return item_descriptions(self._corpus_path)

    def search_rows(self, queries: Sequence[str], *, k: int = 10, beam: int | None = None,
                    candidates: np.ndarray | None = None, batch_size: int = 256
                    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def search(self, queries: str | Sequence[str], *, k: int = 10, beam: int | None = None,
               candidates: np.ndarray | None = None, **options: Any
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per query: ``(scores [Q, k], item_ids object [Q, k])``, ``""``
        padding."""
        if isinstance(queries, str):
            queries = [queries]
        scores, rows = self.search_rows(queries, k=k, beam=beam, candidates=candidates,
                                        **options)
        return scores, rows_to_ids(self.item_ids, rows)
