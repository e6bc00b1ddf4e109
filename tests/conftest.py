"""Shared test fixtures: tiny deterministic corpora."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Tests run on 2 cores next to each other; one thread per process keeps them predictable.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def make_corpus(path: Path, *, n: int = 40, dim: int = 16, seed: int = 0, **kwargs) -> Path:
    """Write a small valid corpus with clustered embeddings and train/test queries."""
    from gcmr.corpus import Query, write_corpus

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, dim))
    labels = np.arange(n) % 4
    emb = centers[labels] + 0.3 * rng.normal(size=(n, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"item{i:04d}" for i in range(n)]
    words = ["red", "blue", "green", "gold"]
    captions = [[f"a photo of a {words[labels[i]]} thing number {i}", f"{words[labels[i]]} {i}"]
                for i in range(n)]
    queries = {
        "train": [Query(f"the {words[labels[i]]} one {i}", (ids[i],)) for i in range(0, n, 2)],
        "test": [Query(f"{words[labels[i]]} item {i}", (ids[i],)) for i in range(1, n, 2)],
    }
    return write_corpus(path, ids=ids, captions=captions, embeddings=emb.astype(np.float32),
                        queries=queries, name="tiny", modality="image", **kwargs)


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus")


@pytest.fixture
def corpus_factory(tmp_path: Path):
    """``corpus_factory(name, n=..., dim=..., seed=...)`` writes a tiny corpus under tmp_path."""

    def factory(name: str = "corpus", **kwargs) -> Path:
        return make_corpus(tmp_path / name, **kwargs)

    return factory
