"""RQ-VAE: residual quantization, decode of codes, eq. 1 loss, codebook init and restarts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gcmr.ids.rqvae import (
    RQVAE,
    TrainOptions,
    _restart_dead_codes,
    init_codebooks,
    rqvae_loss,
    train_rqvae,
    warmup_rsqrt,
)


def tiny_model(levels: int = 2, size: int = 8) -> RQVAE:
    torch.manual_seed(0)
    return RQVAE(12, [16, 8], 4, levels, size)


def test_quantize_is_residual_and_decode_latent_inverts_codes():
    model = tiny_model(levels=3)
    z = torch.randn(50, 4)
    codes, z_q, residuals, chosen = model.quantize(z)
    assert codes.shape == (50, 3)
    # r_{l+1} = r_l - e_l, and each code is the nearest vector of its level's codebook
    for lvl in range(3):
        d = ((residuals[lvl][:, None, :] - model.codebooks[lvl][None]) ** 2).sum(-1)
        assert torch.equal(d.argmin(1), codes[:, lvl])
    assert torch.allclose(residuals[1], residuals[0] - chosen[0])
    # decode: codes -> quantized latent is exactly the sum the encoder produced
    assert torch.allclose(model.decode_latent(codes), z_q, atol=1e-6)


def test_straight_through_gradient_reaches_encoder_and_codebooks():
    model = tiny_model()
    loss, parts = rqvae_loss(model(torch.randn(32, 12)), alpha=1.0, beta=0.25)
    loss.backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0
    assert model.codebooks.grad.abs().sum() > 0
    assert parts["loss"] == pytest.approx(parts["recon"] + parts["quant"], rel=1e-5)


def test_warmup_then_inverse_sqrt():
    assert warmup_rsqrt(0, 10) == pytest.approx(0.1)
    assert warmup_rsqrt(9, 10) == pytest.approx(1.0)
    assert warmup_rsqrt(39, 10) == pytest.approx(0.5)


def test_codebook_init_uses_each_levels_residuals(clustered):
    model = tiny_model(levels=2, size=8)
    x = torch.from_numpy(clustered(200, 12, seed=1))
    init_codebooks(model, x, iters=10, seed=0)
    codes = model.encode(x)
    # k-means init from the data: every code of every level is used on the init sample
    for lvl in range(2):
        assert len(torch.unique(codes[:, lvl])) == 8


def test_dead_codes_are_reseeded_from_residuals():
    model = tiny_model(levels=1, size=4)
    opt = torch.optim.Adam(model.parameters())
    residual = torch.randn(20, 4)
    usage = torch.tensor([[5, 0, 3, 0]])
    before = model.codebooks.detach().clone()
    counts = _restart_dead_codes(model, opt, usage, [residual], 1, torch.Generator().manual_seed(0))
    assert counts == [2]
    after = model.codebooks.detach()
    assert torch.equal(after[0, [0, 2]], before[0, [0, 2]])
    for code in (1, 3):  # each re-seeded code is one of the current residuals
        assert (residual == after[0, code]).all(dim=1).any()


def test_training_is_deterministic_and_reduces_loss(clustered):
    x = clustered(512, 12, seed=2)
    opts = TrainOptions(epochs=16, max_steps=0, batch_size=64, lr=1e-2, warmup_steps=5,
                        alpha=1.0, beta=0.25, restart_interval=4, restart_threshold=1,
                        init_rows=256, kmeans_iters=5, seed=0)

    def run():
        model = tiny_model()
        losses = []
        info = train_rqvae(model, lambda idx: torch.from_numpy(x[idx]), len(x), opts,
                           on_step=lambda s, t, p: losses.append(p["loss"]))
        return model, losses, info

    m1, losses, info = run()
    m2, _, _ = run()
    assert info["steps"] == 128 == len(losses)
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
