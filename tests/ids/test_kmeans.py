"""Pure k-means, chunked assignment and the coarse mini-batch K-Means."""

from __future__ import annotations

import numpy as np
import torch

from gcmr.ids.kmeans import assign, kmeans, minibatch_kmeans


def test_assign_matches_bruteforce_across_chunks(clustered):
    x = clustered(300, 6, seed=1)
    c = torch.from_numpy(clustered(10, 6, seed=2))
    brute = ((torch.from_numpy(x)[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(assign(x, c, chunk=64), brute)
    assert torch.equal(assign(torch.from_numpy(x), c, chunk=7), brute)


def test_empty_cluster_keeps_its_centroid():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    init = torch.tensor([[0.0, 0.0], [5.0, 5.0], [100.0, 100.0]])  # third never wins a point
    centroids, labels = kmeans(x, 3, init=init, iters=5)
    assert torch.isfinite(centroids).all()
    assert torch.equal(centroids[2], init[2])
    assert labels.tolist() == [0, 0, 1, 1]
    assert torch.allclose(centroids[0], torch.tensor([0.05, 0.0]))


def test_kmeans_is_deterministic_and_finds_separated_clusters(clustered):
    x = torch.from_numpy(clustered(400, 8, clusters=4, noise=0.01, seed=3))
    c1, l1 = kmeans(x, 4, seed=5)
    c2, l2 = kmeans(x, 4, seed=5)
    assert torch.equal(c1, c2) and torch.equal(l1, l2)
    # k-means++ seeding on well separated blobs: each blob is one cluster
    assert len(torch.unique(l1)) == 4
    inertia = ((x - c1[l1]) ** 2).sum(1).mean()
    assert inertia < 0.01


def test_minibatch_kmeans_on_memmap_like_rows(clustered, tmp_path):
    x = clustered(1000, 8, clusters=5, noise=0.05, seed=4)
    np.save(tmp_path / "x.npy", x.astype(np.float16))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    steps = []
    c, info = minibatch_kmeans(mm, 5, epochs=2, batch_size=100, seed=0,
                               on_step=lambda d, t: steps.append((d, t)))
    assert c.shape == (5, 8) and c.dtype == np.float32
    assert steps[-1] == (20, 20) == (info["steps"], info["steps"])
    labels = assign(mm, torch.from_numpy(c))
    assert len(torch.unique(labels)) == 5
