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
    total_steps,
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


def _hook_opts(**changes) -> TrainOptions:
    base = {"epochs": 3, "max_steps": 0, "batch_size": 50, "lr": 1e-2, "warmup_steps": 2,
            "alpha": 1.0, "beta": 0.25, "restart_interval": 3, "restart_threshold": 1,
            "init_rows": 128, "kmeans_iters": 5, "seed": 0}
    base.update(changes)
    return TrainOptions(**base)


def _train(x: np.ndarray, opts: TrainOptions, **kwargs) -> tuple[RQVAE, dict]:
    model = tiny_model()
    info = train_rqvae(model, lambda idx: torch.from_numpy(x[idx]), len(x), opts, **kwargs)
    return model, info


def _same_weights(a: RQVAE, b: RQVAE) -> bool:
    return all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))


def test_extra_loss_is_called_per_batch_and_trains_the_model(clustered):
    x = clustered(230, 12, seed=4)
    opts = _hook_opts()
    calls: list[np.ndarray] = []
    logged: list[dict[str, float]] = []

    def penalty(out, idx):
        calls.append(idx)
        assert out.z_q.shape == (len(idx), 4) and out.x_hat.shape == (len(idx), 12)
        term = 1e4 * out.z_q.pow(2).mean()  # pulls every chosen code toward the origin
        return term, {"penalty": float(term.detach())}

    plain, _ = _train(x, opts)
    hooked, info = _train(x, opts, extra_loss=penalty,
                          on_step=lambda s, t, p: logged.append(dict(p)))
    # once per optimizer step, with the sorted rows of the batch; every row once per epoch
    assert len(calls) == info["steps"] == total_steps(opts, len(x)) == 15
    assert all((np.diff(idx) > 0).all() for idx in calls)
    assert [len(idx) for idx in calls[:5]] == [50, 50, 50, 50, 30]
    assert sorted(np.concatenate(calls[:5]).tolist()) == list(range(len(x)))
    # its loss is part of the optimized (and logged) loss and reaches the codebook gradient
    assert all(p["loss"] == pytest.approx(p["recon"] + p["quant"] + p["penalty"], rel=1e-5)
               for p in logged)
    assert info["final_penalty"] == logged[-1]["penalty"]
    assert not torch.equal(hooked.codebooks, plain.codebooks)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        norm_hooked = hooked.decode_latent(hooked.encode(xt)).norm(dim=1).mean()
        norm_plain = plain.decode_latent(plain.encode(xt)).norm(dim=1).mean()
    assert norm_hooked < 0.8 * norm_plain  # the penalty shrank the quantized latents


def test_no_extra_loss_trains_exactly_as_the_plain_recipe(clustered):
    """``extra_loss=None`` (and a hook adding zero) leave seeding, batch order, restarts and
    every weight exactly as the plain call."""
    x = clustered(230, 12, seed=4)
    opts = _hook_opts(max_steps=11)
    plain, info = _train(x, opts)
    none, info_none = _train(x, opts, extra_loss=None)
    zero, info_zero = _train(x, opts, extra_loss=lambda out, idx: (out.z.new_zeros(()), {}))
    assert _same_weights(plain, none) and _same_weights(plain, zero)
    assert info == info_none == info_zero and info["steps"] == 11
    assert sum(info["restarted_codes"]) > 0  # the restart path (and its generator) ran
    xt = torch.from_numpy(x)
    assert torch.equal(plain.encode(xt), none.encode(xt))
    other, _ = _train(x, _hook_opts(max_steps=11, seed=1))
    assert not _same_weights(plain, other)
