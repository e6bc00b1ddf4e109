"""K-Means building blocks: a pure Lloyd k-means, chunked nearest-centroid assignment, and the
coarse mini-batch K-Means of CART (scikit-learn ``MiniBatchKMeans`` fed batch by batch so the
CLI can show progress).

The pure :func:`kmeans` follows vector-quantize-pytorch's ``kmeans``: k-means++ seeding, then
Lloyd iterations where a centroid whose cluster empties keeps its previous value (instead of
becoming NaN), so the result always has ``k`` finite centroids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

ASSIGN_CHUNK = 8192  # rows per block in assign(); bounds the [rows, k] distance matrix


def _sq_dist(x: torch.Tensor, c: torch.Tensor, c_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances [n, k] via ||x||^2 - 2 x.c + ||c||^2 (clamped at 0)."""
    if c_sq is None:
        c_sq = (c * c).sum(dim=1)
    d = (x * x).sum(dim=1, keepdim=True) - 2.0 * (x @ c.T) + c_sq.unsqueeze(0)
    return d.clamp_min_(0.0)


def assign(x: Any, centroids: torch.Tensor, *, chunk: int = ASSIGN_CHUNK) -> torch.Tensor:
    """Index of the nearest centroid of each row of ``x`` (int64 [n]); memory bounded by ``chunk``.

    ``x`` is a tensor, an array, a memmap or anything sliceable into float rows."""
    c = centroids.float()
    c_sq = (c * c).sum(dim=1)
    out = torch.empty(len(x), dtype=torch.int64)
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk]
        block = block.float() if isinstance(block, torch.Tensor) else \
            torch.from_numpy(np.array(block, dtype=np.float32))
        out[start:start + len(block)] = _sq_dist(block.to(c.device), c, c_sq).argmin(dim=1).cpu()
    return out


def kmeans_plusplus(x: torch.Tensor, k: int, *, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): ``k`` rows of ``x`` picked with
    probability proportional to the squared distance to the nearest seed chosen so far."""
    n = x.shape[0]
    x_sq = (x * x).sum(dim=1)

    def dist_to(i: int) -> torch.Tensor:  # squared distance of every row to row i
        return (x_sq - 2.0 * (x @ x[i]) + x_sq[i]).clamp_min_(0.0)

    picks = [int(torch.randint(n, (1,), generator=generator))]
    closest = dist_to(picks[0])
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0.0:  # every row coincides with a seed: pick uniformly
            idx = int(torch.randint(n, (1,), generator=generator))
        else:
            idx = int(torch.multinomial(closest / total, 1, generator=generator))
        picks.append(idx)
        closest = torch.minimum(closest, dist_to(idx))
    return x[picks].clone()


def kmeans(x: torch.Tensor, k: int, *, iters: int = 20, seed: int = 0,
           init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure Lloyd k-means on ``x`` [n, d]. Returns ``(centroids [k, d], assignment [n])``.

    ``k`` may not exceed ``n``. A cluster that empties keeps its previous centroid. The result
    depends only on the inputs and ``seed``.
    """
    x = x.float()
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"kmeans needs 1 <= k <= n, got k={k}, n={n}")
    gen = torch.Generator().manual_seed(seed)
    centroids = init.float().clone() if init is not None else kmeans_plusplus(x, k, generator=gen)
    labels = _sq_dist(x, centroids).argmin(dim=1)
    for _ in range(iters):
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        nonempty = counts > 0
        centroids = torch.where(nonempty.unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1),
                                centroids)
        new_labels = _sq_dist(x, centroids).argmin(dim=1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return centroids, labels


def minibatch_kmeans(
    x: np.ndarray,
    k: int,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    init_rows: int = 4096,
    init_iters: int = 10,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """Coarse K-Means of CART: scikit-learn ``MiniBatchKMeans`` (low-count centers
    reassigned) over ``epochs`` seeded shuffles of ``x`` [n, d].

    The centers start from :func:`kmeans` (k-means++ and ``init_iters`` Lloyd steps) on a
    seeded sample of ``init_rows`` rows. Returns ``(centroids float32 [k, d], info)``;
    ``on_step(done, total)`` reports progress.
    """
    from sklearn.cluster import MiniBatchKMeans

    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"minibatch_kmeans needs 1 <= k <= n, got k={k}, n={n}")
    batch_size = min(max(batch_size, k), n)
    rng = np.random.default_rng(seed)
    # seed the centers with our k-means++ + a few Lloyd steps on a sample (scikit-learn's
    # greedy k-means++ over 3 * batch_size rows is far slower on 2 shared cores)
    init_size = min(n, max(init_rows, 4 * k))
    init_rows_idx = np.sort(rng.choice(n, size=init_size, replace=False))
    sample = torch.from_numpy(np.array(x[init_rows_idx], dtype=np.float32))
    init, _ = kmeans(sample, k, iters=init_iters, seed=seed)
    del sample
    model = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, random_state=seed, n_init=1,
                            init=init.numpy(), compute_labels=False)
    steps_per_epoch = -(-n // batch_size)
    total = epochs * steps_per_epoch
    done = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            rows = np.sort(order[start:start + batch_size])  # sorted: sequential memmap reads
            model.partial_fit(np.asarray(x[rows], dtype=np.float32))
            done += 1
            if on_step is not None:
                on_step(done, total)
    centroids = np.asarray(model.cluster_centers_, dtype=np.float32)
    return centroids, {"steps": total, "batch_size": batch_size, "init_rows": init_size}
