"""CART losses: token cross-entropy over level-masked logits, R-Drop KL (zero for identical
distributions, symmetric, matches the KL definition, NaN-free with masked codes), cart_loss."""

from __future__ import annotations

import pytest
import torch

from gcmr.errors import ConfigError
from gcmr.model import GenerativeRetrievalModel, ModelConfig
from gcmr.train.losses import cart_loss, rdrop_kl, token_cross_entropy

SIZES = [5, 3, 4]


def masked_logits(seed: int, b: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, len(SIZES), max(SIZES), generator=g) * 2
    for level, size in enumerate(SIZES):
        logits[:, level, size:] = float("-inf")
    return logits.requires_grad_()


def level_mask() -> torch.Tensor:
    return torch.arange(max(SIZES)) < torch.tensor(SIZES).unsqueeze(1)


def test_rdrop_kl_zero_for_identical_and_symmetric():
    a, b = masked_logits(0), masked_logits(1)
    assert rdrop_kl(a, a.detach().clone()).abs().item() < 1e-7
    assert rdrop_kl(a, a + 3.0).abs().item() < 1e-6  # softmax is shift invariant
    torch.testing.assert_close(rdrop_kl(a, b), rdrop_kl(b, a))
    assert rdrop_kl(a, b).item() > 0.01


def test_rdrop_kl_is_the_mean_bidirectional_kl_over_real_codes():
    a, b = masked_logits(2), masked_logits(3)
    expected = []
    for i in range(a.shape[0]):
        for level, size in enumerate(SIZES):
            pa = torch.log_softmax(a[i, level, :size], -1)
            pb = torch.log_softmax(b[i, level, :size], -1)
            kl_ab = (pa.exp() * (pa - pb)).sum()
            kl_ba = (pb.exp() * (pb - pa)).sum()
            expected.append(0.5 * (kl_ab + kl_ba))
    torch.testing.assert_close(rdrop_kl(a, b), torch.stack(expected).mean())


def test_rdrop_kl_level_mask_for_finite_padding_and_no_nan_gradients():
    a, b = masked_logits(4), masked_logits(5)
    reference = rdrop_kl(a, b)
    # the same logits with finite garbage where a level has no code
    fa = a.detach().nan_to_num(neginf=7.0).requires_grad_()
    fb = b.detach().nan_to_num(neginf=-3.0).requires_grad_()
    torch.testing.assert_close(rdrop_kl(fa, fb, level_mask=level_mask()), reference)
    reference.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert (a.grad[~level_mask().expand_as(a)] == 0).all()


def test_token_cross_entropy_matches_per_level_softmax():
    a = masked_logits(6)
    g = torch.Generator().manual_seed(0)
    targets = torch.stack([torch.randint(0, s, (6,), generator=g) for s in SIZES], dim=1)
    manual = torch.stack([
        -torch.log_softmax(a[i, level, :size], -1)[targets[i, level]]
        for i in range(6) for level, size in enumerate(SIZES)]).mean()
    torch.testing.assert_close(token_cross_entropy(a, targets), manual)
    finite = a.detach().nan_to_num(neginf=5.0)
    torch.testing.assert_close(token_cross_entropy(finite, targets, level_mask=level_mask()),
                               manual.detach())


def _model_batch(dropout: float = 0.3):
    cfg = ModelConfig(vocab_size=30, level_sizes=SIZES, d_model=16, n_heads=2, d_ff=32,
                      dropout=dropout)
    model = GenerativeRetrievalModel(cfg)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 30, (5, 6), generator=g)
    mask = torch.ones(5, 6, dtype=torch.bool)
    codes = torch.stack([torch.randint(0, s, (5,), generator=g) for s in SIZES], dim=1)
    return model, ids, mask, codes


def test_cart_loss_is_ce_plus_omega_kl_of_two_dropout_passes():
    model, ids, mask, codes = _model_batch()
    model.train()
    torch.manual_seed(0)
    loss, parts = cart_loss(model, ids, mask, codes, omega=0.15)
    assert set(parts) == {"loss", "ce", "kl"}
    assert parts["kl"] > 0  # the two halves saw different dropout masks
    assert parts["loss"] == pytest.approx(parts["ce"] + 0.15 * parts["kl"], rel=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    # without dropout both passes agree: KL vanishes and CE equals the single-pass CE
    model.eval()
    _, parts_eval = cart_loss(model, ids, mask, codes, omega=0.15)
    single, parts_single = cart_loss(model, ids, mask, codes, omega=0.0)
    assert parts_eval["kl"] < 1e-6 and "kl" not in parts_single
    assert parts_eval["ce"] == pytest.approx(parts_single["ce"], rel=1e-5)
    with pytest.raises(ConfigError, match="omega"):
        cart_loss(model, ids, mask, codes, omega=-1.0)
