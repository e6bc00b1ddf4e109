"""Identifiers fitted on a query-aligned view (IndexConfig.fit_view): caption text vectors,
or media + text concatenated; the manifest records the view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gcmr.corpus import load_corpus
from gcmr.errors import ConfigError
from gcmr.ids import IndexConfig, build_index, load_index
from gcmr.ids.views import fit_view
from tests.conftest import make_corpus

SMALL = {"num_clusters": 4, "codebook_size": 4, "latent_dim": 8, "hidden_dims": [16],
         "epochs": 2, "max_steps": 10, "batch_size": 16}


def _corpus_with_text(tmp_path: Path, *, dim_text: int = 6) -> Path:
    rng = np.random.default_rng(3)
    text = rng.normal(size=(40, dim_text)).astype(np.float32)
    return make_corpus(tmp_path / "c", caption_embeddings=text)


def test_caption_view_is_the_unit_caption_vectors(tmp_path: Path) -> None:
    corpus = load_corpus(_corpus_with_text(tmp_path))
    view, info = fit_view(corpus, IndexConfig(fit_view="captions"))
    text = np.load(corpus.path / "caption_embeddings.npy")
    assert np.allclose(view, text / np.linalg.norm(text, axis=1, keepdims=True), atol=1e-6)
    assert info["view"] == "captions" and info["items_without_text"] == 0


def test_joint_view_averages_the_two_cosines(tmp_path: Path) -> None:
    corpus = load_corpus(_corpus_with_text(tmp_path))
    view, _ = fit_view(corpus, IndexConfig(fit_view="joint"))
    media = np.asarray(corpus.embeddings, dtype=np.float64)
    media /= np.linalg.norm(media, axis=1, keepdims=True)
    text = np.load(corpus.path / "caption_embeddings.npy").astype(np.float64)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    assert view.shape == (40, media.shape[1] + text.shape[1])
    joint = view.astype(np.float64) @ view[:5].T.astype(np.float64)
    assert np.allclose(joint, ((media @ media[:5].T) + (text @ text[:5].T)) / 2, atol=1e-5)


def test_index_fitted_on_captions_records_the_view(tmp_path: Path) -> None:
    corpus = load_corpus(_corpus_with_text(tmp_path))
    index = build_index(corpus, IndexConfig(fit_view="captions", **SMALL), show_progress=False)
    assert index.scheme.dim_ == 6  # fitted on the 6-d text view, not the 16-d embeddings
    saved = load_index(index.save(tmp_path / "idx"))
    assert saved.config.fit_view == "captions"
    assert saved.stats["fit"]["view"]["view"] == "captions"
    assert saved.stats["fit"]["view"]["text_source"] == "caption_embeddings.npy"


def test_caption_view_refuses_items_without_captions(tmp_path: Path) -> None:
    corpus = load_corpus(_corpus_with_text(tmp_path))
    text = np.load(corpus.path / "caption_embeddings.npy")
    text[3] = 0.0  # no text for item 3
    np.save(corpus.path / "caption_embeddings.npy", text)
    with pytest.raises(ConfigError, match="1 of 40 items have no captions"):
        fit_view(load_corpus(corpus.path), IndexConfig(fit_view="captions"))
    view, info = fit_view(load_corpus(corpus.path), IndexConfig(fit_view="joint"))
    assert info["items_without_text"] == 1 and np.all(view[3, 16:] == 0)


def test_fit_view_is_validated_and_scheme_checked() -> None:
    with pytest.raises(ConfigError, match="fit_view"):
        IndexConfig(fit_view="queries")
    with pytest.raises(ConfigError, match="does not apply to --scheme atomic"):
        IndexConfig(scheme="atomic").check_options(["fit_view"], names={"fit_view": "--fit-view"})
