"""Fixtures of the live-update and query-by-example tests: a tiny hybrid model trained on the
first 40 items of a 48-item corpus, and the 8 held-out items to add."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_corpus

BASE, TOTAL = 40, 48


@pytest.fixture(scope="session")
def live_world(tmp_path_factory) -> dict:
    """``{"root", "model", "corpus", "new", "full"}``: a trained model (query head) and the
    held-out items as a corpus directory (``new``)."""
    from gcmr.corpus import load_corpus, write_corpus
    from gcmr.ids import IndexConfig, build_index
    from gcmr.train import TrainConfig, train

    root = tmp_path_factory.mktemp("live")
    make_corpus(root / "full", n=TOTAL)
    full = load_corpus(root / "full")
    emb = np.asarray(full.embeddings)

    def mine(q):
        return int(q.relevant[0][4:]) < BASE

    write_corpus(root / "corpus", ids=full.ids[:BASE], captions=full.captions[:BASE],
                 embeddings=emb[:BASE], name="tiny", modality="image",
                 queries={s: [q for q in full.queries[s] if mine(q)] for s in full.queries})
    write_corpus(root / "new", ids=full.ids[BASE:], captions=full.captions[BASE:],
                 embeddings=emb[BASE:], name="new", modality="image")
    config = IndexConfig(num_clusters=4, codebook_size=4, latent_dim=8, hidden_dims=[16],
                         epochs=2, max_steps=10, batch_size=16)
    build_index(load_corpus(root / "corpus"), config, show_progress=False).save(root / "index")
    train(root / "index", root / "model", show_progress=False,
          config=TrainConfig(epochs=3, batch_size=16, vocab_size=120, val_split="test",
                             max_val_queries=8, val_beam=3, dense_weight=1.0),
          model_options={"d_model": 16, "n_heads": 2, "d_ff": 32, "encoder_layers": 1,
                         "decoder_layers": 1})
    return {"root": root, "model": root / "model", "corpus": root / "corpus",
            "new": root / "new", "full": full}


@pytest.fixture
def model_copy(live_world, tmp_path: Path) -> Path:
    """A fresh copy of the trained model directory (its manifest points to the shared
    index and corpus, which updates never touch)."""
    out = tmp_path / "model"
    shutil.copytree(live_world["model"], out)
    return out
