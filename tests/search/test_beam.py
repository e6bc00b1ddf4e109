"""Constrained beam search: the exhaustive-scoring oracle, validity, no duplicates, k > beam,
padding, and agreement with the model's sequence log-probability."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gcmr.errors import ConfigError
from gcmr.ids.trie import Trie
from gcmr.model import GenerativeRetrievalModel, ModelConfig
from gcmr.search.beam import constrained_beam_search, effective_beam, exhaustive_scores

SIZES = [4, 3, 5]


def unique_codes(n: int, sizes: list[int], seed: int) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1)
    grid = grid.reshape(-1, len(sizes))
    return grid[np.random.default_rng(seed).choice(len(grid), n, replace=False)]


def setup(n: int = 25, *, fusion: str = "cart", seed: int = 0, sizes=SIZES):
    codes = unique_codes(n, sizes, seed)
    cfg = ModelConfig(vocab_size=50, level_sizes=sizes, d_model=32, n_heads=4, d_ff=64,
                      fusion=fusion, seed=seed)
    model = GenerativeRetrievalModel(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (4, 6), generator=g)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2, 3:] = False
    return model, Trie.build(codes, sizes), codes, ids.masked_fill(~mask, 0), mask


@pytest.mark.parametrize("fusion,seed", [("cart", 0), ("cart", 1), ("none", 2)])
def test_full_width_beam_equals_exhaustive_top_k(fusion, seed):
    model, trie, codes, ids, mask = setup(fusion=fusion, seed=seed)
    exact = exhaustive_scores(model, ids, mask, codes)  # [B, N]
    assert exact.shape == (4, len(codes))
    top_scores, top_rows = exact.topk(10, dim=1)
    scores, rows, got_codes = constrained_beam_search(model, ids, mask, trie, beam=len(codes), k=10)
    assert torch.equal(rows, top_rows)
    torch.testing.assert_close(scores, top_scores, rtol=1e-5, atol=1e-5)
    assert torch.equal(got_codes, torch.as_tensor(codes)[rows])


def test_results_are_valid_distinct_sorted_and_scored_exactly():
    model, trie, codes, ids, mask = setup(n=40, sizes=[6, 5, 4])
    scores, rows, got = constrained_beam_search(model, ids, mask, trie, beam=5)
    assert scores.shape == rows.shape == (4, 5) and got.shape == (4, 5, 3)
    assert (rows >= 0).all()
    for b in range(4):
        assert len(set(rows[b].tolist())) == 5  # no duplicates
    assert torch.equal(got, torch.as_tensor(codes)[rows])  # each identifier is that item's
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    rescored = model.sequence_log_prob(ids, mask, got)
    torch.testing.assert_close(scores, rescored, rtol=1e-5, atol=1e-5)
    # a wider beam never finds a worse best identifier
    wide, _, _ = constrained_beam_search(model, ids, mask, trie, beam=40, k=5)
    assert (wide[:, 0] >= scores[:, 0] - 1e-5).all()


def test_k_larger_than_beam_widens_the_beam():
    model, trie, _, ids, mask = setup()
    assert effective_beam(3, 7) == 7 and effective_beam(7, 3) == 7
    scores, rows, _ = constrained_beam_search(model, ids, mask, trie, beam=3, k=7)
    ref_scores, ref_rows, _ = constrained_beam_search(model, ids, mask, trie, beam=7, k=7)
    assert torch.equal(rows, ref_rows) and torch.equal(scores, ref_scores)
    with pytest.raises(ConfigError, match=">= 1"):
        constrained_beam_search(model, ids, mask, trie, beam=0)


def test_fewer_identifiers_than_k_are_padded():
    model, trie, codes, ids, mask = setup(n=6)
    scores, rows, got = constrained_beam_search(model, ids, mask, trie, beam=10, k=10)
    assert scores.shape == (4, 10)
    assert (rows[:, :6] >= 0).all() and (rows[:, 6:] == -1).all()
    assert torch.isfinite(scores[:, :6]).all() and torch.isneginf(scores[:, 6:]).all()
    assert (got[:, 6:] == -1).all()
    assert sorted(rows[0, :6].tolist()) == list(range(6))


def test_single_chain_trie_and_empty_trie():
    model, _, _, ids, mask = setup()
    one = Trie.build(np.array([[2, 1, 4]]), SIZES)
    scores, rows, _ = constrained_beam_search(model, ids, mask, one, beam=4, k=2)
    assert (rows[:, 0] == 0).all() and (rows[:, 1] == -1).all()
    empty = Trie.build(np.zeros((0, 3), dtype=np.int64), SIZES)
    scores, rows, got = constrained_beam_search(model, ids, mask, empty, beam=4)
    assert (rows == -1).all() and torch.isneginf(scores).all() and got.shape == (4, 4, 3)


def test_trie_of_another_model_is_refused():
    model, _, _, ids, mask = setup()
    other = Trie.build(unique_codes(5, [4, 3, 6], 0), [4, 3, 6])
    with pytest.raises(ConfigError, match="level sizes"):
        constrained_beam_search(model, ids, mask, other, beam=4)


def test_beam_search_runs_inside_training_without_touching_gradients():
    model, trie, _, ids, mask = setup()
    model.train()
    _, rows, got = constrained_beam_search(model, ids, mask, trie, beam=4)
    assert model.training
    # rescoring the beams carries gradients (as AVG does)
    model.eval()
    score = model.sequence_log_prob(ids, mask, got).sum()
    score.backward()
    assert model.code_embedding.weight.grad is not None
