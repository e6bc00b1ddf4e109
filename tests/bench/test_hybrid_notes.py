"""The accuracy report says which hybrid-search targets a run met, with the measured ratios."""

from __future__ import annotations

from gcmr.bench.accuracy import DEFAULT_ROWS, ROWS, hybrid_notes


def test_hybrid_rows_are_part_of_the_suite() -> None:
    assert {"cart-hybrid", "cart-hybrid-gen", "caption-matcher"} <= set(DEFAULT_ROWS)
    assert ROWS["cart-hybrid-gen"].model_of == "cart-hybrid"
    assert ROWS["cart-hybrid-gen"].train == ROWS["cart-hybrid"].train  # the same model


def test_targets_are_reported_as_met_or_missed() -> None:
    by = {"cart-hybrid": {"R@1": 0.85, "R@10": 0.97},
          "cart-hybrid-gen": {"R@1": 0.40, "R@10": 0.9},
          "dense-exact": {"R@1": 0.88, "R@10": 0.99},
          "oracle": {"R@1": 0.95, "R@10": 1.0},
          "caption-matcher": {"R@1": 0.30, "R@10": 0.6}}
    notes = hybrid_notes(by)
    assert "Target met: hybrid CART R@1 0.8500 = 0.97 x the dense tower's R@1" in notes[0]
    assert notes[1].startswith("Target met: hybrid CART R@1 0.8500 = 0.89 x the oracle's R@1")
    assert notes[2].startswith("Target met: hybrid CART R@10")
    assert notes[3].startswith("Target missed: pure generation (same model) R@1 0.4000 = 0.45 x")
    assert notes[4].startswith("Target met: hybrid CART R@1 0.8500 = 2.83 x the caption")
    assert hybrid_notes({"cart-hybrid": {"R@1": 0.5, "R@10": 0.9}}) == []
