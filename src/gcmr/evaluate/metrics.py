"""Retrieval metrics as pure functions over ranked lists and relevance sets.

``ranked`` is an int array [Q, K] of item rows, best first; entries < 0 are padding (fewer
than K results). ``relevant`` holds, for each query, the rows of its relevant items (one or
more). Recall@K is the fraction of queries with at least one relevant item in the top K (the
text-to-media convention of Flickr30K / MSR-VTT evaluation and of the CART and AVG papers);
MRR@K is the mean reciprocal rank of the first relevant item, 0 past rank K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS = (1, 5, 10)


def _as_ranked(ranked: np.ndarray, k: int) -> np.ndarray:
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be [Q, K], got shape {ranked.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return ranked[:, :k]


def _first_hit_rank(ranked: np.ndarray, relevant: Sequence[Sequence[int]]) -> np.ndarray:
    """1-based rank of the first relevant item per query, or 0 when none is ranked."""
    if len(relevant) != ranked.shape[0]:
        raise ValueError(f"{ranked.shape[0]} ranked lists but {len(relevant)} relevance sets")
    q = ranked.shape[0]
    if q == 0:
        return np.zeros(0, dtype=np.int64)
    lengths = np.fromiter((len(r) for r in relevant), dtype=np.int64, count=q)
    flat = np.concatenate([np.asarray(r, dtype=np.int64).ravel() for r in relevant]) \
        if lengths.sum() else np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(q), lengths)
    # hit[i, j] = ranked[i, j] is one of query i's relevant rows: compare (query, row) keys
    width = int(max(flat.max(initial=-1), ranked.max(initial=-1))) + 1
    key_rel = owner * width + flat
    key_ranked = np.arange(q, dtype=np.int64)[:, None] * width + np.maximum(ranked, 0)
    hit = np.isin(key_ranked, key_rel) & (ranked >= 0)
    first = np.argmax(hit, axis=1) + 1
    return np.where(hit.any(axis=1), first, 0)


def recall_at_k(ranked: np.ndarray, relevant: Sequence[Sequence[int]], k: int) -> float:
    """Fraction of queries with a relevant item among the first ``k`` results."""
    ranks = _first_hit_rank(_as_ranked(ranked, k), relevant)
    return float(np.mean(ranks > 0)) if len(ranks) else 0.0


def mrr_at_k(ranked: np.ndarray, relevant: Sequence[Sequence[int]], k: int) -> float:
    """Mean reciprocal rank of the first relevant item within the first ``k`` results."""
    ranks = _first_hit_rank(_as_ranked(ranked, k), relevant)
    if not len(ranks):
        return 0.0
    return float(np.mean(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)))


def retrieval_metrics(
    ranked: np.ndarray, relevant: Sequence[Sequence[int]], ks: Sequence[int] = DEFAULT_KS,
    mrr_k: int = 10,
) -> dict[str, float]:
    """R@k for each k and MRR@mrr_k, as a dict {"R@1": ..., "MRR@10": ...}."""
    out = {f"R@{k}": recall_at_k(ranked, relevant, k) for k in ks}
    out[f"MRR@{mrr_k}"] = mrr_at_k(ranked, relevant, mrr_k)
    return out
