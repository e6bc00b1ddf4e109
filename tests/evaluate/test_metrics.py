"""Metrics against a brute-force reference on seeded data."""

from __future__ import annotations

import numpy as np
import pytest

from gcmr.evaluate.metrics import mrr_at_k, recall_at_k, retrieval_metrics


def _reference(ranked, relevant, k):
    hits, rr = [], []
    for row, rel in zip(ranked, relevant):
        rel = set(int(r) for r in rel)
        first = next((i + 1 for i, r in enumerate(row[:k]) if r >= 0 and r in rel), None)
        hits.append(first is not None)
        rr.append(1.0 / first if first else 0.0)
    return float(np.mean(hits)), float(np.mean(rr))


@pytest.mark.parametrize("seed", range(5))
def test_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q, n, k = 50, 30, 12
    ranked = np.stack([rng.permutation(n)[:k] for _ in range(q)])
    ranked[rng.random(ranked.shape) < 0.1] = -1  # padding
    relevant = [rng.choice(n, size=rng.integers(1, 4), replace=False) for _ in range(q)]
    for kk in (1, 3, 5, 10, 12):
        r_ref, m_ref = _reference(ranked, relevant, kk)
        assert recall_at_k(ranked, relevant, kk) == pytest.approx(r_ref)
        assert mrr_at_k(ranked, relevant, kk) == pytest.approx(m_ref)


def test_simple_values() -> None:
    ranked = np.array([[3, 1, 2], [0, 5, 4], [7, 8, 9]])
    relevant = [[1], [0, 4], [6]]
    m = retrieval_metrics(ranked, relevant, ks=(1, 2), mrr_k=3)
    assert m == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3),
                 "MRR@3": pytest.approx((0.5 + 1.0 + 0) / 3)}


def test_bad_shapes() -> None:
    with pytest.raises(ValueError):
        recall_at_k(np.zeros(3, dtype=int), [[0]] * 3, 1)
    with pytest.raises(ValueError):
        recall_at_k(np.zeros((3, 2), dtype=int), [[0]] * 2, 1)
    with pytest.raises(ValueError):
        mrr_at_k(np.zeros((3, 2), dtype=int), [[0]] * 3, 0)
