"""Fixtures for the identifier tests: tiny clustered corpora and a fast index config.

Helpers are exposed as factory fixtures (not imported) so test directories never clash on
module names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gcmr.corpus import Corpus, Query, load_corpus, write_corpus
from gcmr.ids import IndexConfig


def _clustered(n: int, dim: int, *, clusters: int = 8, seed: int = 0,
               noise: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    labels = rng.integers(clusters, size=n)
    return (centers[labels] + noise * rng.normal(size=(n, dim))).astype(np.float32)


def _write(path: Path, emb: np.ndarray, *, dtype: str = "float32") -> Corpus:
    n = len(emb)
    ids = [f"it{i:05d}" for i in range(n)]
    captions = [[f"caption {i}"] for i in range(n)]
    queries = {"test": [Query(f"query {i}", (ids[i],)) for i in range(0, n, 7)]}
    write_corpus(path, ids=ids, captions=captions, embeddings=emb, queries=queries,
                 name="ids-test", dtype=dtype)
    return load_corpus(path, load_captions=False)


def _fast_config(**changes) -> IndexConfig:
    base = {"num_clusters": 8, "codebook_size": 16, "num_fine_levels": 2, "latent_dim": 8,
                "hidden_dims": [32, 16], "epochs": 3, "batch_size": 128, "warmup_steps": 2,
                "restart_interval": 2, "kmeans_epochs": 2, "kmeans_batch_size": 256,
                "init_kmeans_rows": 512, "kmeans_iters": 10}
    base.update(changes)
    return IndexConfig(**base)


@pytest.fixture
def clustered() -> Callable[..., np.ndarray]:
    """``clustered(n, dim, clusters=8, seed=0, noise=0.3)``: seeded Gaussian clusters [n, dim]."""
    return _clustered


@pytest.fixture
def corpus_of(tmp_path: Path) -> Callable[..., Corpus]:
    """``corpus_of(embeddings, dtype="float32", name="corpus")``: write and load a corpus."""
    def make(emb: np.ndarray, *, dtype: str = "float32", name: str = "corpus") -> Corpus:
        return _write(tmp_path / name, emb, dtype=dtype)
    return make


@pytest.fixture
def fast_config() -> Callable[..., IndexConfig]:
    """``fast_config(**changes)``: small sizes and a short RQ-VAE budget (sub-second builds)."""
    return _fast_config


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """400 items, dim 24, 8 Gaussian clusters."""
    return _write(tmp_path_factory.mktemp("ids") / "corpus", _clustered(400, 24))
