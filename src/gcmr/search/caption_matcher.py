"""The caption matcher: the baseline every caption-enhanced retriever must beat.

No training: a pretrained sentence encoder (the offline all-MiniLM-L6-v2 by default) embeds
every item's captions once; a query's score for an item is its best cosine over that item's
captions. It measures how far the captions alone, matched by a model that already knows
language, get on the corpus's queries. A generative retriever trained on the same captions
that scores below it has learned less from them than an off-the-shelf encoder knows.

It is a :class:`~gcmr.search.Searcher` (``search`` / ``search_rows``, ``item_ids``...), so the
evaluation runner and the benchmarks score it like any model. Dense search: no beam.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gcmr.errors import ConfigError, GcmrError
from gcmr.search.base import CorpusSearcher, check_search_args

# query x caption scores per step are kept under this many floats
_MAX_SCORE_ELEMS = 1 << 24


class CaptionMatcher(CorpusSearcher):
    """Max-over-captions cosine search with a pretrained text encoder (see module doc)."""

    def __init__(self, corpus: Any, encoder: Any = "minilm", *, batch_size: int = 256) -> None:
        """``corpus`` a loaded corpus (with captions); ``encoder`` an encoder spec for
        :func:`gcmr.encoders.registry.load_text_encoder` or an object with ``encode_text``."""
        if corpus.captions is None:
            raise ConfigError("the caption matcher needs the corpus's captions (load it with "
                              "load_captions=True)")
        if isinstance(encoder, str):
            from gcmr.encoders.registry import load_text_encoder

            encoder = load_text_encoder(encoder)
        super().__init__(corpus_path=corpus.path, corpus_fingerprint=corpus.fingerprint,
                         item_ids=list(corpus.ids))
        self.encoder = encoder
        self.batch_size = batch_size
        texts: list[str] = []
        owners: list[int] = []
        for row, caps in enumerate(corpus.captions):
            texts += caps
            owners += [row] * len(caps)
        if not texts:
            raise ConfigError(f"{corpus.path}: no item has captions; nothing to match")
        self.owners = np.asarray(owners, dtype=np.int64)  # non-decreasing: captions in item order
        self.captions = self._encode(texts)  # [C, d] normalized
        # the first caption of each item that has any: reduceat boundaries
        self._items_with, self._starts = np.unique(self.owners, return_index=True)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        parts = [np.asarray(self.encoder.encode_text(list(texts[i:i + self.batch_size])),
                            dtype=np.float32)
                 for i in range(0, len(texts), self.batch_size)]
        x = np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def item_scores(self, queries: Sequence[str]) -> np.ndarray:
        """[Q, N] best caption cosine of every item (-inf for items without captions)."""
        q = self._encode(list(queries))
        out = np.full((len(q), len(self._item_ids)), -np.inf, dtype=np.float32)
        step = max(1, _MAX_SCORE_ELEMS // max(1, len(self.captions)))
        for start in range(0, len(q), step):
            s = q[start:start + step] @ self.captions.T  # [q, C]
            out[start:start + step, self._items_with] = np.maximum.reduceat(s, self._starts,
                                                                            axis=1)
        return out

    def search_rows(self, queries: Sequence[str], *, k: int = 10, beam: int | None = None,
                    candidates: np.ndarray | None = None, batch_size: int = 256
                    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float32 [Q, k], rows int64 [Q, k])``, -inf / -1 padding."""
        queries = check_search_args(queries, k=k, beam=beam, candidates=candidates,
                                    num_items=len(self._item_ids), batch_size=batch_size)
        if beam is not None:
            raise ConfigError(f"beam={beam}: the caption matcher scores every item and has no "
                              f"beam")
        if k < 1:
            raise GcmrError(f"k must be >= 1, got {k}")
        texts = list(queries)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise GcmrError(f"query {i + 1} is empty")
        scores = np.full((len(texts), k), -np.inf, dtype=np.float32)
        rows = np.full((len(texts), k), -1, dtype=np.int64)
        pool = None if candidates is None else np.unique(np.asarray(candidates, dtype=np.int64))
        for start in range(0, len(texts), batch_size):
            s = self.item_scores(texts[start:start + batch_size])
            if pool is not None:
                keep = np.full(s.shape[1], False)
                keep[pool] = True
                s[:, ~keep] = -np.inf
            width = min(k, s.shape[1])
            top = np.argsort(-s, axis=1, kind="stable")[:, :width]
            top_s = np.take_along_axis(s, top, axis=1)
            stop = start + len(s)
            scores[start:stop, :width] = top_s
            rows[start:stop, :width] = np.where(np.isfinite(top_s), top, -1)
        return scores, rows
