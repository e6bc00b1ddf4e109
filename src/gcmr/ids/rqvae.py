"""RQ-VAE: an MLP autoencoder whose latent is quantized by a stack of residual codebooks.

CART (section 3.2, appendix C) builds its fine tokens this way on the residual between an
item embedding and its coarse K-Means centroid: encoder ``D -> 512 -> 256 -> 128 -> 64`` with
ELU, a symmetric decoder, ``M`` separate codebooks (one per level, not shared), trained with

    L = ||x - x_hat||^2 + alpha * sum_l ( ||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2 )   (eq. 1)

where ``r_0 = z`` is the encoder output, ``e_l`` the nearest code of ``r_l`` in codebook ``l``
and ``r_{l+1} = r_l - e_l`` (residual quantization, as in RQ-VAE / TIGER). Gradients pass the
quantizer with the straight-through estimator. Codebooks are kept healthy by a k-means
initialization of every level from the (encoded) residuals of that level, and by re-seeding
codes left unused for ``restart_interval`` steps from random current residuals.

Inputs are normalized inside the model (``(x - shift) / scale`` with a per-dimension shift and
one global scale, both buffers saved with the weights), because CART's residual inputs are
small in norm and would otherwise make training badly conditioned.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gcmr.ids.kmeans import _sq_dist, kmeans


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers through ``dims`` with ELU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


@dataclass
class RQOutput:
    """What one forward pass returns: normalized input and reconstruction, latent, codes."""

    x: torch.Tensor  # normalized input [B, D]
    x_hat: torch.Tensor  # reconstruction of x (normalized space) [B, D]
    z: torch.Tensor  # encoder output [B, d]
    z_q: torch.Tensor  # quantized latent, sum of the chosen codes [B, d]
    codes: torch.Tensor  # int64 [B, M]
    residuals: list[torch.Tensor]  # r_l per level [B, d] (r_0 = z)
    chosen: list[torch.Tensor]  # e_l per level [B, d]


class RQVAE(nn.Module):
    """MLP encoder/decoder with ``num_levels`` residual codebooks of ``codebook_size`` vectors."""

    def __init__(self, input_dim: int, hidden_dims: list[int], latent_dim: int,
                 num_levels: int, codebook_size: int) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.num_levels = num_levels
        self.codebook_size = codebook_size
        self.encoder = mlp([input_dim, *hidden_dims, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim])
        # one separate codebook per level, stacked [M, C, d] (levels never share vectors)
        self.codebooks = nn.Parameter(torch.randn(num_levels, codebook_size, latent_dim) * 0.01)
        self.register_buffer("shift", torch.zeros(input_dim))
        self.register_buffer("scale", torch.ones(()))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def codebook_of(self, level: int) -> int:
        """Index into ``codebooks`` of the codebook that quantizes ``level`` (its own here)."""
        return level

    def book(self, level: int) -> torch.Tensor:
        """The codebook [C, d] that quantizes ``level``."""
        return self.codebooks[self.codebook_of(level)]

    def init_codebooks_from(self, sample: torch.Tensor, *, iters: int, seed: int,
                            max_rows: int) -> None:
        """Data-driven codebook init before training: :func:`init_codebooks` (k-means of each
        level's residuals of ``sample``). Subclasses with other codebook layouts override it;
        ``max_rows`` bounds the rows they may pool."""
        init_codebooks(self, sample, iters=iters, seed=seed)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor],
                                                  list[torch.Tensor]]:
        """Residual quantization of ``z`` [B, d]: ``(codes [B, M], z_q, residuals, chosen)``."""
        residual = z
        codes, residuals, chosen = [], [], []
        for lvl in range(self.num_levels):
            book = self.book(lvl)
            idx = _sq_dist(residual.detach(), book.detach()).argmin(dim=1)
            e = book[idx]
            codes.append(idx)
            residuals.append(residual)
            chosen.append(e)
            residual = residual - e
        z_q = torch.stack(chosen).sum(dim=0) if chosen else torch.zeros_like(z)
        return torch.stack(codes, dim=1), z_q, residuals, chosen

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latent of ``codes`` [B, M]: the sum of the chosen code vectors."""
        codes = torch.as_tensor(codes, dtype=torch.int64)
        out = torch.zeros(codes.shape[0], self.codebooks.shape[2], dtype=self.codebooks.dtype)
        for lvl in range(self.num_levels):
            out = out + self.book(lvl)[codes[:, lvl]]
        return out

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Reconstruction in input space (normalization undone)."""
        return self.decoder(z_q) * self.scale + self.shift

    def forward(self, x: torch.Tensor) -> RQOutput:
        xn = self.normalize(x)
        z = self.encoder(xn)
        codes, z_q, residuals, chosen = self.quantize(z)
        z_st = z + (z_q - z).detach()  # straight-through estimator
        return RQOutput(xn, self.decoder(z_st), z, z_q, codes, residuals, chosen)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes [B, M] of inputs ``x`` [B, D] (no gradient)."""
        return self.quantize(self.encoder(self.normalize(x)))[0]


def rqvae_loss(out: RQOutput, *, alpha: float, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 1: reconstruction MSE + alpha * per-level (codebook + beta * commitment) losses."""
    recon = (out.x_hat - out.x).pow(2).mean()
    quant = out.z.new_zeros(())
    for r, e in zip(out.residuals, out.chosen):
        codebook = (r.detach() - e).pow(2).mean()
        commit = (r - e.detach()).pow(2).mean()
        quant = quant + codebook + beta * commit
    loss = recon + alpha * quant
    return loss, {"loss": float(loss.detach()), "recon": float(recon.detach()),
                  "quant": float(quant.detach())}


def warmup_rsqrt(step: int, warmup: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then inverse-square-root decay."""
    step = step + 1
    if warmup <= 0:
        return 1.0 / math.sqrt(step)
    return min(step / warmup, math.sqrt(warmup / step))


@dataclass
class TrainOptions:
    epochs: int
    max_steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    alpha: float
    beta: float
    restart_interval: int
    restart_threshold: int
    init_rows: int
    kmeans_iters: int
    seed: int


def fit_normalization(model: RQVAE, sample: torch.Tensor) -> None:
    """Set ``shift`` (per-dimension mean) and ``scale`` (global RMS of the centered rows)."""
    shift = sample.mean(dim=0)
    rms = float((sample - shift).pow(2).mean().sqrt())
    model.shift.copy_(shift)
    model.scale.fill_(rms if rms > 1e-12 else 1.0)


@torch.no_grad()
def init_codebooks(model: RQVAE, sample: torch.Tensor, *, iters: int, seed: int) -> None:
    """k-means initialization of each level's codebook from that level's residuals of ``sample``
    (encoded by the still-untrained encoder), level by level."""
    residual = model.encoder(model.normalize(sample))
    for lvl in range(model.num_levels):
        k = model.codebook_size
        centroids, labels = kmeans(residual, k, iters=iters, seed=seed + lvl)
        model.codebooks.data[lvl] = centroids
        residual = residual - centroids[labels]


ExtraLoss = Callable[[RQOutput, np.ndarray], tuple[torch.Tensor, dict[str, float]]]


def total_steps(opts: TrainOptions, num_rows: int) -> int:
    """Optimizer steps :func:`train_rqvae` takes on ``num_rows`` rows (epochs, capped by
    ``max_steps`` when it is positive)."""
    total = opts.epochs * -(-num_rows // min(opts.batch_size, num_rows))
    return min(total, opts.max_steps) if opts.max_steps > 0 else total


def train_rqvae(
    model: RQVAE,
    batch_of: Callable[[np.ndarray], torch.Tensor],
    num_rows: int,
    opts: TrainOptions,
    *,
    extra_loss: ExtraLoss | None = None,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
) -> dict:
    """Train ``model`` on ``num_rows`` rows served by ``batch_of(sorted_row_indices)``.

    The recipe: normalization and codebook init (``model.init_codebooks_from``) from a seeded
    sample of the rows, then Adam with linear warm-up and inverse-sqrt decay on the eq. 1
    loss, re-seeding dead codes every ``restart_interval`` steps (usage is counted per
    codebook, so a codebook shared by several levels pools their codes and residuals).

    ``extra_loss(out, idx)``, when given, adds a term to eq. 1 for every batch: it receives
    the forward pass ``out`` (:class:`RQOutput`: normalized input, reconstruction, latent,
    quantized latent, codes) and the sorted row indices ``idx`` of the batch, and returns
    ``(loss, parts)``: a scalar added to the loss (so its gradient trains the model) and
    floats logged next to ``loss`` / ``recon`` / ``quant`` (AVG's alignment term, eq. 6).

    Deterministic given ``opts.seed`` (CPU). Returns training info: steps, final losses
    (``final_<part>``) and the number of dead codes re-seeded per codebook.
    """
    gen = torch.Generator().manual_seed(opts.seed)
    torch.manual_seed(opts.seed)
    batch_size = min(opts.batch_size, num_rows)
    steps_per_epoch = -(-num_rows // batch_size)
    total = total_steps(opts, num_rows)
    # normalization and codebook init from a seeded sample of the rows
    init_n = min(num_rows, max(opts.init_rows, model.codebook_size))
    init_idx = np.sort(torch.randperm(num_rows, generator=gen)[:init_n].numpy())
    sample = batch_of(init_idx)
    fit_normalization(model, sample)
    model.init_codebooks_from(sample, iters=opts.kmeans_iters, seed=opts.seed,
                              max_rows=opts.init_rows)
    del sample

    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_rsqrt(s, opts.warmup_steps))
    groups = model.codebooks.shape[0]
    usage = torch.zeros(groups, model.codebook_size, dtype=torch.int64)
    restarts = [0] * groups
    parts: dict[str, float] = {}
    step = 0
    model.train()
    while step < total:
        order = torch.randperm(num_rows, generator=gen).numpy()
        for start in range(0, num_rows, batch_size):
            if step >= total:
                break
            idx = np.sort(order[start:start + batch_size])
            out = model(batch_of(idx))
            loss, parts = rqvae_loss(out, alpha=opts.alpha, beta=opts.beta)
            if extra_loss is not None:
                extra, extra_parts = extra_loss(out, idx)
                loss = loss + extra
                parts = {**parts, **extra_parts, "loss": float(loss.detach())}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            for lvl in range(model.num_levels):
                usage[model.codebook_of(lvl)] += torch.bincount(
                    out.codes[:, lvl], minlength=model.codebook_size)
            if opts.restart_interval and step % opts.restart_interval == 0 and step < total:
                for g, n_dead in enumerate(_restart_dead_codes(
                        model, optimizer, usage, _residuals_by_codebook(model, out.residuals),
                        opts.restart_threshold, gen)):
                    restarts[g] += n_dead
                usage.zero_()
            if on_step is not None:
                on_step(step, total, parts)
    model.eval()
    final = {f"final_{k}": v for k, v in parts.items() if k not in ("loss", "recon", "quant")}
    return {"steps": total, "batch_size": batch_size, "steps_per_epoch": steps_per_epoch,
            "final_loss": parts.get("loss"), "final_recon": parts.get("recon"),
            "final_quant": parts.get("quant"), **final, "restarted_codes": restarts}


def _residuals_by_codebook(model: RQVAE, residuals: list[torch.Tensor]) -> list[torch.Tensor]:
    """The residuals each codebook quantized, in level order (levels sharing one are pooled)."""
    by: list[list[torch.Tensor]] = [[] for _ in range(model.codebooks.shape[0])]
    for lvl, r in enumerate(residuals):
        by[model.codebook_of(lvl)].append(r)
    return [rs[0] if len(rs) == 1 else torch.cat(rs) for rs in by]


@torch.no_grad()
def _restart_dead_codes(model: RQVAE, optimizer: torch.optim.Optimizer, usage: torch.Tensor,
                        residuals: list[torch.Tensor], threshold: int,
                        gen: torch.Generator) -> list[int]:
    """Re-seed codes used fewer than ``threshold`` times in the window from random residuals of
    their codebook in the current batch (``usage`` and ``residuals`` are per codebook, i.e. per
    level unless levels share one); clear their Adam moments so the new vector starts fresh."""
    counts = []
    state = optimizer.state.get(model.codebooks, {})
    for lvl, r in enumerate(residuals):
        dead = torch.nonzero(usage[lvl] < threshold).flatten()
        counts.append(len(dead))
        if not len(dead):
            continue
        pick = torch.randint(r.shape[0], (len(dead),), generator=gen)
        model.codebooks.data[lvl, dead] = r.detach()[pick]
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][lvl, dead] = 0.0
    return counts
