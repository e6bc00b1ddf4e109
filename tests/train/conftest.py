"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcmr.corpus import load_corpus
from gcmr.ids import IndexConfig, build_index


@pytest.fixture
def tiny_index(tiny_corpus: Path, tmp_path: Path) -> Path:
    """A small CART index of ``tiny_corpus`` (4 clusters, codebooks of 4)."""
    corpus = load_corpus(tiny_corpus)
    config = IndexConfig(num_clusters=4, codebook_size=4, latent_dim=8, hidden_dims=[16],
                         epochs=2, max_steps=10, batch_size=16)
    index = build_index(corpus, config, show_progress=False)
    return index.save(tmp_path / "index")
