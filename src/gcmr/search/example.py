"""Query by example: an item embedding (or an existing item, "more like this") as the query.

The index's scheme encodes the example into a semantic identifier (for an existing item, its
own identifier), and the nearest identifiers are the candidates: the items sharing the
longest prefix with it first, then, as the hybrid's :class:`~gcmr.search.rerank.PrefixExpander`
widens a beam's identifier to its coarse cluster, the items sharing shorter prefixes, down to
``expand_depth`` codes (the first code by default) and further only while fewer than ``k``
were found, at most ``max(max_candidates, k)`` in all, deeper prefixes first. Candidates are
ranked by the cosine between the example vector and their item embeddings where the model
has them (an item's own embedding scores 1, so "more like this" returns the item itself
first); without embeddings by the length of the shared prefix (ties in identifier order).

The live items are sorted once by identifier (lexicographically), so the items sharing the
first ``d`` codes of any identifier are one contiguous range, found by one ``searchsorted``
per level inside the previous level's range: ``O(L log N)`` per query, no pass over the
corpus.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gcmr.errors import ConfigError

# weight of the example's cosine in a mixed text + example query:
# score = (1 - w) * cosine(query vector, item) + w * cosine(example, item embedding)
EXAMPLE_WEIGHT = 0.5


class PrefixNeighbours:
    """The live items grouped by identifier prefix, for example queries."""

    def __init__(self, codes: np.ndarray, rows: np.ndarray) -> None:
        """``codes`` [N, L] of every row (the last column, the unique counter, is not a
        prefix level); ``rows``: the rows that may be returned (the live items)."""
        codes = np.asarray(codes, dtype=np.int64)
        self.depth = codes.shape[1] - 1  # semantic levels
        rows = np.asarray(rows, dtype=np.int64)
        semantic = codes[rows, :self.depth]
        order = np.lexsort(codes[rows].T[::-1]) if len(rows) else np.zeros(0, dtype=np.int64)
        self.rows = rows[order]
        self.sorted = semantic[order]

    def ranges(self, semantic: np.ndarray) -> list[tuple[int, int]]:
        """``[lo_d, hi_d)`` in :attr:`rows` of the items sharing the first ``d`` codes of
        ``semantic`` [L - 1], for d = 0 .. L - 1 (d = 0: every live item)."""
        lo, hi = 0, len(self.rows)
        out = [(lo, hi)]
        for level in range(self.depth):
            column = self.sorted[lo:hi, level]
            a = lo + int(np.searchsorted(column, semantic[level], side="left"))
            b = lo + int(np.searchsorted(column, semantic[level], side="right"))
            lo, hi = a, b
            out.append((lo, hi))
        return out

    def candidates(self, semantic: np.ndarray, *, k: int, expand_depth: int,
                   max_candidates: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, shared prefix lengths)`` of one example's candidates, deepest first."""
        cap = max(max_candidates, k)
        ranges = self.ranges(np.asarray(semantic, dtype=np.int64))
        picked: list[np.ndarray] = []
        depths: list[np.ndarray] = []
        total = 0
        floor = max(1, min(expand_depth, self.depth)) if self.depth else 0
        inner = ranges[self.depth]
        for d in range(self.depth, -1, -1):
            lo, hi = ranges[d]
            room = cap - total
            if d == self.depth:
                new = np.arange(lo, min(hi, lo + room))
            else:  # the range minus the deeper one already taken (bounded by the room left)
                left = np.arange(lo, min(inner[0], lo + room))
                new = np.concatenate([left, np.arange(inner[1],
                                                      min(hi, inner[1] + room - len(left)))])
            inner = (lo, hi)
            if len(new):
                picked.append(self.rows[new])
                depths.append(np.full(len(new), d, dtype=np.int64))
                total += len(new)
            if total >= cap or (d <= floor and total >= k):
                break
        if not picked:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(picked), np.concatenate(depths)


def unit_rows(matrix: Any) -> np.ndarray:
    """Float32 rows scaled to unit length (zero rows stay zero)."""
    block = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(block, axis=-1, keepdims=True)
    return block / np.maximum(norms, 1e-12)


def check_examples(vectors: Any, dim: int, *, name: str = "vector") -> np.ndarray:
    """Example vectors as float32 [Q, D]: one vector [D] or a batch [Q, D] of finite
    numbers of the items' dimension; anything else is a :class:`ConfigError` naming it."""
    try:
        arr = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be an array of numbers: {exc}") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ConfigError(f"{name} must be one vector [D] or a batch [Q, D], got shape "
                          f"{list(arr.shape)}")
    if arr.shape[1] != dim:
        raise ConfigError(f"{name} has dimension {arr.shape[1]}, the model's items have {dim}")
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        raise ConfigError(f"{name}[{int(bad[0])}] contains NaN or Inf")
    if not np.linalg.norm(arr, axis=1).all():
        raise ConfigError(f"{name}[{int(np.flatnonzero(~np.linalg.norm(arr, axis=1).astype(bool))[0])}]"
                          f" is all zeros: it has no direction to search")
    return arr


def rank_example(candidates: np.ndarray, depths: np.ndarray, example: np.ndarray | None,
                 items: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of one example's candidates: by cosine between ``example`` [D] and the
    candidates' rows of ``items`` when both are given, else by shared prefix length
    (stable). Returns ``(scores [k], rows [k])``, -inf / -1 padding."""
    scores_out = np.full(k, -np.inf, dtype=np.float32)
    rows_out = np.full(k, -1, dtype=np.int64)
    if len(candidates) == 0:
        return scores_out, rows_out
    if example is not None and items is not None:
        order_rows = np.unique(candidates)
        block = unit_rows(items[order_rows])
        cos = block @ unit_rows(example)
        scores = cos[np.searchsorted(order_rows, candidates)].astype(np.float32)
        order = np.lexsort((-depths, -scores))  # cosine first, then the deeper prefix
    else:
        scores = depths.astype(np.float32)
        order = np.argsort(-scores, kind="stable")
    top = order[:k]
    scores_out[:len(top)] = scores[top]
    rows_out[:len(top)] = candidates[top]
    return scores_out, rows_out
