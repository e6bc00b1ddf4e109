"""The retriever model: fusion block (shapes, gates, eqs. 2-5), teacher forcing vs incremental
decoding, level masking, candidate batching, determinism and initialization."""

from __future__ import annotations

import math

import pytest
import torch

from gcmr.errors import ConfigError
from gcmr.model import GenerativeRetrievalModel, ModelConfig
from gcmr.model.layers import CartFusion

SIZES = [5, 4, 3]


def tiny(**changes) -> GenerativeRetrievalModel:
    cfg = ModelConfig(vocab_size=40, level_sizes=SIZES, d_model=32, n_heads=4, d_ff=64,
                      max_query_length=12, **changes)
    return GenerativeRetrievalModel(cfg).eval()


def queries(b: int = 3, t: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 4:] = False  # a shorter query, padded
    return ids.masked_fill(~mask, 0), mask


def random_codes(b: int, seed: int = 0, *extra: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, s, (b, *extra), generator=g) for s in SIZES], dim=-1)


def test_fusion_block_shapes_and_gates():
    torch.manual_seed(0)
    s, d, b, t, q = 3, 16, 2, 5, 4
    fusion = CartFusion(d, 4, s, dropout=0.0).eval()
    fusion.init_gates(torch.Generator().manual_seed(0))
    layers = [torch.randn(b, t, d) for _ in range(s)]
    mask = torch.ones(b, 1, 1, t, dtype=torch.bool)
    mask[1, ..., 3:] = False
    memory = fusion.memory(layers)
    (ck, cv), (fk, fv) = memory
    assert ck.shape == cv.shape == (b, 4, t, d // 4)
    assert fk.shape == fv.shape == (s, b, 4, t, d // 4)
    y = torch.randn(b, q, d)
    out = fusion(y, memory, mask)
    assert out.shape == (b, q, d)
    # the same block written out per encoder layer, with each gate's full W_i [d, 2d]
    z = fusion.coarse_proj(torch.cat(layers, dim=-1))  # Z = W[E_1..E_S] + b
    g = torch.sigmoid(fusion.coarse_attn(y, fusion.coarse_attn.memory(z), mask)) / s
    fine = torch.zeros_like(y)
    for i, e in enumerate(layers):
        c = fusion.fine_attn(y, fusion.fine_attn.memory(e), mask)
        w = torch.cat([fusion.gate_y.weight[i * d:(i + 1) * d], fusion.gate_c[i]], dim=1)
        alpha = torch.sigmoid(torch.cat([y, c], dim=-1) @ w.T + fusion.gate_y.bias[i * d:(i + 1) * d])
        assert alpha.shape == (b, q, d) and ((alpha > 0) & (alpha < 1)).all()
        fine = fine + alpha * c
    torch.testing.assert_close(out, g + fine, rtol=1e-5, atol=1e-5)
    # the coarse part lies in (0, 1/S): G = sigmoid(.) / S
    assert ((g > 0) & (g < 1 / s)).all()


def test_gate_init_is_xavier_of_the_full_gate_matrix():
    d = 32
    bound = math.sqrt(6 / (2 * d + d))
    fusion = tiny().decoder[0].fusion
    assert fusion.gate_c.abs().max() <= bound and fusion.gate_y.weight.abs().max() <= bound
    assert fusion.gate_y.weight.abs().max() > 0.8 * bound  # uses the range, not a tiny init
    assert torch.count_nonzero(fusion.gate_y.bias) == 0


@pytest.mark.parametrize("fusion", ["cart", "none"])
def test_forward_masks_codes_outside_each_level(fusion):
    model = tiny(fusion=fusion)
    ids, mask = queries()
    logits = model(ids, mask, random_codes(3))
    assert logits.shape == (3, 3, max(SIZES))
    for level, size in enumerate(SIZES):
        assert torch.isfinite(logits[:, level, :size]).all()
        assert torch.isneginf(logits[:, level, size:]).all()


@pytest.mark.parametrize("fusion", ["cart", "none"])
def test_incremental_decoding_matches_teacher_forcing(fusion):
    model = tiny(fusion=fusion)
    ids, mask = queries()
    codes = random_codes(3, 1)
    expected = torch.log_softmax(model(ids, mask, codes), dim=-1)
    enc = model.encode(ids, mask)
    tokens, cache = torch.zeros(3, 1, dtype=torch.int64), None
    for level, size in enumerate(SIZES):
        hidden, cache = model.decode_step(enc, tokens, cache)
        assert cache.length == level + 1
        got = model.level_log_probs(hidden, level)[:, 0]
        torch.testing.assert_close(got, expected[:, level, :size], rtol=1e-5, atol=1e-5)
        tokens = model.token_ids(level, codes[:, level:level + 1])


def test_sequence_log_prob_sums_level_log_probs_and_batches_candidates():
    model = tiny()
    ids, mask = queries()
    cands = random_codes(3, 2, 4)  # [B, K=4, L]
    batched = model.sequence_log_prob(ids, mask, cands)
    assert batched.shape == (3, 4)
    for j in range(4):
        logp = torch.log_softmax(model(ids, mask, cands[:, j]), dim=-1)
        manual = logp.gather(-1, cands[:, j].unsqueeze(-1)).squeeze(-1).sum(-1)
        torch.testing.assert_close(batched[:, j], manual, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.sequence_log_prob(ids, mask, cands[:, j]), manual,
                                   rtol=1e-5, atol=1e-5)
    # probabilities of all identifiers sum to one
    grid = torch.cartesian_prod(*[torch.arange(s) for s in SIZES])
    total = model.sequence_log_prob(ids, mask, grid.expand(3, -1, -1)).exp().sum(1)
    torch.testing.assert_close(total, torch.ones(3), rtol=1e-4, atol=1e-4)


def test_padding_does_not_change_a_query():
    model = tiny()
    ids, mask = queries()
    codes = random_codes(3, 3)
    full = model.sequence_log_prob(ids, mask, codes)
    alone = model.sequence_log_prob(ids[1:2, :4], mask[1:2, :4], codes[1:2])
    torch.testing.assert_close(full[1:2], alone, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter():
    model = tiny().train()
    ids, mask = queries()
    model.sequence_log_prob(ids, mask, random_codes(3, 4)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert missing == []


def test_initialization_is_seeded_and_private():
    torch.manual_seed(123)
    a = tiny()
    torch.manual_seed(456)
    b = tiny()
    c = tiny(seed=1)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(),
                                  c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.code_embedding.weight, c.code_embedding.weight)


def test_tied_output_uses_the_code_embedding():
    model = tiny(tie_output_embeddings=True)
    assert model.output is None
    hidden = torch.randn(2, 32)
    expected = hidden @ model.code_embedding.weight[1 + 5:1 + 5 + 4].T
    torch.testing.assert_close(model.level_logits(hidden, 1), expected)


def test_config_round_trip_and_errors():
    cfg = tiny().config
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(vocab_size=10, level_sizes=[4], d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="fusion"):
        ModelConfig.from_dict({"vocab_size": 10, "level_sizes": [4], "fusion": "mesh"})
    with pytest.raises(ConfigError, match="level_sizes"):
        ModelConfig(vocab_size=10, level_sizes=[])
    model = tiny()
    ids, mask = queries(t=13)
    with pytest.raises(ConfigError, match="at most 12"):
        model.encode(ids, mask)
    with pytest.raises(ConfigError, match="outside the level sizes"):
        model(ids[:, :5], mask[:, :5], torch.tensor([[0, 4, 0]] * 3))
