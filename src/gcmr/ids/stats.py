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


# ----------------------------------------------------------------------------- degenerate data

COLLISION_WARN_RATE = 0.5  # collision rate (before the unique token) above which we warn
NO_INFORMATION_SHARE = 0.1  # distinct semantic ids <= this share of the possible: no information
EXAMPLES = 5  # rows named in a warning
_HASH_ROWS = 4096  # rows hashed per step (bounds the [rows, D] uint64 temporaries)


class DataWarning(UserWarning):
    """Degenerate data: embeddings or identifiers that carry less information than they
    should (zero or duplicate rows, identifiers that barely separate items)."""


class RowScan:
    """Zero and duplicate embedding rows, found in one streaming pass over chunks.

    Each row gets two independent 64-bit multiply-add hashes of its float32 bit patterns
    (``-0.0`` counted as ``0.0``), so duplicates are grouped by hash in O(N) memory and one
    sort of the hashes, never by comparing pairs; two distinct rows share both hashes with a
    probability near 2**-128. Feed chunks in row order with :meth:`update`.
    """

    def __init__(self, dim: int, *, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._mult = rng.integers(1, 2**63, size=(2, dim), dtype=np.uint64) | np.uint64(1)
        self._hashes: list[np.ndarray] = []
        self._zero: list[np.ndarray] = []
        self._rows = 0

    def update(self, chunk: Any) -> None:
        """Hash the next rows ``chunk`` [n, D] (float16/32/64)."""
        x = np.asarray(chunk, dtype=np.float32)
        for start in range(0, len(x), _HASH_ROWS):
            part = x[start:start + _HASH_ROWS] + np.float32(0.0)  # -0.0 + 0.0 == +0.0
            words = np.ascontiguousarray(part).view(np.uint32).astype(np.uint64)
            self._hashes.append(np.stack([(words * m).sum(axis=1, dtype=np.uint64)
                                          for m in self._mult], axis=1))
            self._zero.append(self._rows + np.flatnonzero(~part.any(axis=1)))
            self._rows += len(part)

    def result(self) -> dict[str, Any]:
        """``zero_rows`` (all-zero rows), ``duplicate_rows`` (non-zero rows equal to an
        earlier row) and the first few examples of each (``[row, earlier row]`` pairs)."""
        zero = np.concatenate(self._zero) if self._zero else np.zeros(0, dtype=np.int64)
        dup = np.zeros((0, 2), dtype=np.int64)
        if self._rows:
            hashes = np.concatenate(self._hashes)
            _, first, inverse = np.unique(hashes, axis=0, return_index=True,
                                          return_inverse=True)
            earlier = first[inverse.reshape(-1)]
            rows = np.flatnonzero(earlier != np.arange(self._rows))
            rows = rows[~np.isin(rows, zero)]
            dup = np.stack([rows, earlier[rows]], axis=1)
        return {"rows": int(self._rows), "zero_rows": len(zero),
                "zero_examples": [int(r) for r in zero[:EXAMPLES]],
                "duplicate_rows": len(dup),
                "duplicate_examples": [[int(a), int(b)] for a, b in dup[:EXAMPLES]]}


def degenerate_warnings(scan: dict[str, Any], stats: dict[str, Any], level_sizes: list[int],
                        ids: list[str] | None = None) -> list[str]:
    """Messages for degenerate data: all-zero embedding rows, duplicate rows, and a collision
    rate before the unique token above ``COLLISION_WARN_RATE`` that the level sizes do not
    force (fewer distinct semantic identifiers than half of ``allowed = min(N, capacity)``).
    With at most ``NO_INFORMATION_SHARE * allowed`` distinct identifiers (a zero matrix: 1)
    the message says the embeddings carry almost no information; between the two, that most
    items are told apart only by the counter. ``scan`` is :meth:`RowScan.result`, ``stats``
    :func:`index_stats`."""
    n = int(stats["num_items"])
    messages = []

    def name(row: int) -> str:
        return f"row {row}" + (f" ({ids[row]!r})" if ids is not None and row < len(ids) else "")

    if scan["zero_rows"]:
        shown = ", ".join(name(r) for r in scan["zero_examples"])
        messages.append(
            f"{scan['zero_rows']:,} of {n:,} embedding rows are all zero (e.g. {shown}): they "
            f"carry no information, so these items get identifiers that differ only by the "
            f"unique counter; re-embed or remove them")
    if scan["duplicate_rows"]:
        shown = ", ".join(f"{name(a)} = row {b}" for a, b in scan["duplicate_examples"])
        messages.append(
            f"{scan['duplicate_rows']:,} of {n:,} embedding rows duplicate an earlier row "
            f"(e.g. {shown}): duplicates get identifiers that differ only by the unique "
            f"counter, so search cannot tell them apart")
    semantic = list(level_sizes[:-1])
    capacity = math.prod(semantic) if semantic else 1
    distinct = int(stats["semantic_ids"])
    allowed = min(n, capacity)
    if semantic and n and stats["collision_rate"] > COLLISION_WARN_RATE and \
            distinct < 0.5 * allowed:
        head = (f"collision rate before the unique token is "
                f"{100 * stats['collision_rate']:.1f}% (over {100 * COLLISION_WARN_RATE:.0f}%): "
                f"{distinct:,} distinct semantic identifiers for {n:,} items although the levels "
                f"allow {allowed:,}")
        if distinct <= NO_INFORMATION_SHARE * allowed:
            messages.append(f"{head}; the embeddings carry almost no information for this "
                            f"scheme (constant, zero or duplicate rows?), check how they were "
                            f"computed")
        else:
            messages.append(f"{head}; most items are told apart only by the unique counter "
                            f"(more or larger levels, or a longer fit, may help)")
    return messages
