"""Unique counter (sort/group, never pairwise) and identifier health statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gcmr.ids.stats import index_stats, level_stats, unique_counter


def reference_counter(semantic: np.ndarray) -> np.ndarray:
    """Brute-force reference: count earlier rows with the same semantic code."""
    seen: dict[tuple, int] = {}
    out = []
    for row in map(tuple, semantic.tolist()):
        out.append(seen.get(row, 0))
        seen[row] = seen.get(row, 0) + 1
    return np.array(out, dtype=np.int64)


def test_forced_collisions_get_counters_in_row_order():
    semantic = np.array([[3, 1], [0, 0], [3, 1], [3, 2], [3, 1], [0, 0]])
    assert unique_counter(semantic).tolist() == [0, 0, 1, 0, 2, 1]


@pytest.mark.parametrize("seed", range(5))
def test_counter_matches_bruteforce_and_makes_ids_unique(seed):
    rng = np.random.default_rng(seed)
    semantic = rng.integers(0, 3, size=(500, 3))  # 27 codes for 500 rows: many collisions
    counter = unique_counter(semantic)
    np.testing.assert_array_equal(counter, reference_counter(semantic))
    full = np.concatenate([semantic, counter[:, None]], axis=1)
    assert len(np.unique(full, axis=0)) == len(full)


def test_no_semantic_levels_counts_rows():
    assert unique_counter(np.zeros((5, 0), dtype=np.int64)).tolist() == [0, 1, 2, 3, 4]
    assert unique_counter(np.zeros((0, 2), dtype=np.int64)).tolist() == []


def test_level_stats_utilization_and_entropy():
    s = level_stats(np.array([0, 1, 2, 3] * 5), 8)
    assert (s["used"], s["dead_codes"]) == (4, 4)
    assert s["utilization"] == 0.5
    assert s["entropy_bits"] == pytest.approx(2.0)
    assert s["entropy_norm"] == pytest.approx(2.0 / math.log2(8))
    assert level_stats(np.zeros(10, dtype=np.int64), 1)["entropy_norm"] == 1.0


def test_index_stats_collisions():
    semantic = np.array([[0, 0], [0, 0], [0, 0], [1, 0], [1, 1], [1, 1]])
    codes = np.concatenate([semantic, unique_counter(semantic)[:, None]], axis=1)
    stats = index_stats(codes, [2, 2, 3], ["a", "b", "unique"])
    assert stats["semantic_ids"] == 3
    assert stats["collision_rate"] == pytest.approx(3 / 6)  # rows with counter > 0
    assert stats["colliding_items"] == pytest.approx(5 / 6)  # rows in groups of >= 2
    assert stats["max_group_size"] == 3
    assert stats["unique_ids_pct"] == 100.0
    assert [lvl["used"] for lvl in stats["levels"]] == [2, 2, 3]


def test_index_stats_counts_duplicate_identifiers_and_atomic():
    codes = np.array([[0, 0], [0, 0], [1, 0]])  # rows 0 and 1 are the same identifier
    stats = index_stats(codes, [2, 1], ["a", "unique"])
    assert stats["unique_ids_pct"] == pytest.approx(100 * 2 / 3)
    atomic = index_stats(np.arange(4)[:, None], [4], ["unique"])
    assert atomic["unique_ids_pct"] == 100.0
    assert atomic["semantic_ids"] == 1 and atomic["colliding_items"] == 1.0
    assert atomic["collision_rate"] == pytest.approx(3 / 4)
