"""The unique token and the health statistics of an identifier table.

The unique counter (CART section 3.2) separates items whose semantic codes coincide: items
sharing ``(coarse, fine...)`` get ``0, 1, 2, ...`` in row order. It is computed by one stable
lexicographic sort and a group scan, O(N log N), never by comparing pairs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def unique_counter(semantic: np.ndarray) -> np.ndarray:
    """Counter int64 [N] that makes ``(semantic[i], counter[i])`` unique.

    Within each group of equal rows of ``semantic`` [N, S] the counter runs ``0..k-1`` in row
    order. With ``S = 0`` every row is in one group, so the counter is the row index.
    """
    semantic = np.asarray(semantic, dtype=np.int64)
    n = semantic.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if semantic.shape[1] == 0:
        return np.arange(n, dtype=np.int64)
    order = np.lexsort(semantic.T[::-1])  # stable; first column is the primary key
    srt = semantic[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (srt[1:] != srt[:-1]).any(axis=1)
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    counter = np.empty(n, dtype=np.int64)
    counter[order] = np.arange(n) - group_start
    return counter


def level_stats(codes: np.ndarray, size: int) -> dict[str, Any]:
    """Utilization (codes used / size), entropy in bits and normalized by log2(size), dead codes."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=size)
    used = int((counts > 0).sum())
    total = counts.sum()
    p = counts[counts > 0] / total if total else np.zeros(0)
    entropy = float(-(p * np.log2(p)).sum()) if len(p) else 0.0
    return {
        "size": int(size),
        "used": used,
        "utilization": used / size if size else 0.0,
        "dead_codes": int(size - used),
        "entropy_bits": entropy,
        "entropy_norm": entropy / math.log2(size) if size > 1 else 1.0,
        "max_count": int(counts.max()) if size else 0,
    }


def index_stats(codes: np.ndarray, level_sizes: list[int], level_names: list[str]) -> dict[str, Any]:
    """Health of an identifier table ``codes`` [N, L] whose last column is the unique counter.

    ``collision_rate`` is the fraction of items whose semantic code (all columns but the last)
    was already taken by an earlier item, i.e. that needed a counter > 0; ``colliding_items``
    the fraction of items in a group of two or more; ``max_group_size`` the largest group.
    """
    n, length = codes.shape
    levels = []
    for lvl in range(length):
        entry = {"level": lvl, "name": level_names[lvl]}
        entry.update(level_stats(codes[:, lvl], level_sizes[lvl]))
        levels.append(entry)
    counter = codes[:, -1]
    num_groups = int((counter == 0).sum())
    max_group = int(counter.max()) + 1 if n else 0
    # one lexicographic sort of the full identifiers also sorts their semantic prefixes, so
    # both the distinct identifiers and the semantic groups come from the same pass (no pairs)
    if n:
        order = np.lexsort(codes.T[::-1])
        srt = codes[order]
        differs = srt[1:] != srt[:-1]
        sem_starts = np.ones(n, dtype=bool)
        sem_starts[1:] = differs[:, :-1].any(axis=1) if length > 1 else False
        full_starts = np.ones(n, dtype=bool)
        full_starts[1:] = differs.any(axis=1)
        sizes = np.diff(np.append(np.flatnonzero(sem_starts), n))
        colliding = int(sizes[sizes > 1].sum())
        distinct = int(full_starts.sum())
    else:
        colliding = distinct = 0
    return {
        "num_items": int(n),
        "length": int(length),
        "levels": levels,
        "semantic_ids": num_groups,
        "collision_rate": (n - num_groups) / n if n else 0.0,
        "colliding_items": colliding / n if n else 0.0,
        "max_group_size": max_group,
        "unique_ids_pct": 100.0 * distinct / n if n else 100.0,
    }
