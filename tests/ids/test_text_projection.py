"""CART variants: greedy residual k-means fine levels (``fine_quantizer = kmeans``, additive
codes) and the text-predictable projection of the embeddings (``text_rank``)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from gcmr.cli import main
from gcmr.corpus import Corpus, load_corpus, write_corpus
from gcmr.errors import ConfigError
from gcmr.ids import IndexConfig, build_index, load_index
from gcmr.ids.schemes import CartScheme, reduced_rank_ridge

COLORS = ["red", "blue", "green", "gold", "pink", "gray", "black", "white"]


def _attribute_corpus(path: Path, *, n: int = 480, dim: int = 16, seed: int = 0,
                      captions: bool = True) -> tuple[Corpus, np.ndarray]:
    """Items whose color (named by their captions) sets their mean: the 8 corners of a cube
    in dimensions 0-2; plus a nuisance component in dimensions 3-4 that no caption mentions,
    with more variance per dimension than the colors (so PCA would keep it first)."""
    rng = np.random.default_rng(seed)
    color = np.arange(n) % len(COLORS)
    means = np.zeros((len(COLORS), dim))
    means[:, :3] = 2.0 * np.array(list(itertools.product([-1.0, 1.0], repeat=3)))
    emb = means[color] + 0.2 * rng.normal(size=(n, dim))
    emb[:, 3:5] += 3.0 * rng.normal(size=(n, 2))
    ids = [f"item{i:04d}" for i in range(n)]
    caps = [[f"a photo of a {COLORS[c]} thing", f"{COLORS[c]} object number {i}"]
            if captions else [] for i, c in enumerate(color)]
    write_corpus(path, ids=ids, captions=caps, embeddings=emb.astype(np.float32),
                 name="attribute")
    # loaded as `gcmr index` loads it: the scheme reads the captions itself
    return load_corpus(path, load_captions=False), color


def _within_over_total(z: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared distance to the own class mean over mean squared distance to the mean."""
    within = sum(((z[labels == c] - z[labels == c].mean(0)) ** 2).sum() for c in set(labels))
    return float(within / ((z - z.mean(0)) ** 2).sum())


# ----------------------------------------------------------------------------- (a)


def test_residual_kmeans_codes_are_additive(clustered, fast_config) -> None:
    x = clustered(400, 12)
    scheme = CartScheme(fast_config(fine_quantizer="kmeans", num_fine_levels=3,
                                    codebook_size=8)).fit(x)
    codes = scheme.encode(x)
    assert codes.shape == (400, 4) and scheme.semantic_sizes_ == [8, 8, 8, 8]
    # the sum of one row per level, and each level lowers the reconstruction error
    partial = scheme.centroids_.numpy()[codes[:, 0]].astype(np.float64)
    errors = [float(((x - partial) ** 2).sum(1).mean())]
    for lvl, book in enumerate(scheme.codebooks_):
        partial = partial + book.numpy()[codes[:, lvl + 1]]
        errors.append(float(((x - partial) ** 2).sum(1).mean()))
    assert np.allclose(scheme.decode(codes), partial, atol=1e-5)
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    # no RQ-VAE: per-level k-means statistics instead, codebooks in the state
    info = scheme.fit_info_
    assert "rqvae" not in info and len(info["fine_kmeans"]) == 3
    assert [lvl["inertia_per_item"] for lvl in info["fine_kmeans"]] == pytest.approx(
        errors[1:], rel=1e-4)
    assert sorted(scheme.state_dict()) == ["coarse.centroids", "fine.codebooks.0",
                                           "fine.codebooks.1", "fine.codebooks.2"]


# ----------------------------------------------------------------------------- (b)


def test_reduced_rank_ridge_is_the_svd_of_the_fitted_values() -> None:
    rng = np.random.default_rng(1)
    t = rng.normal(size=(200, 12)).astype(np.float32)
    x = (t @ rng.normal(size=(12, 9)) + 0.5 * rng.normal(size=(200, 9))).astype(np.float32)
    v, sigma, lam = reduced_rank_ridge(t, x, 3, chunk=64)  # chunked T^T X
    t64, x64 = t.astype(np.float64), x.astype(np.float64)
    gram = t64.T @ t64
    assert lam == pytest.approx(0.1 * np.mean(np.diag(gram)))
    f = t64 @ np.linalg.solve(gram + lam * np.eye(12), t64.T @ x64)
    _, s_ref, vt_ref = np.linalg.svd(f, full_matrices=False)
    assert np.allclose(sigma, s_ref, rtol=1e-6)
    assert v.shape == (9, 3) and v.dtype == np.float32
    assert np.allclose(v @ v.T, vt_ref[:3].T @ vt_ref[:3], atol=1e-5)  # same subspace


def test_text_projection_keeps_what_the_captions_name(tmp_path: Path, fast_config) -> None:
    corpus, color = _attribute_corpus(tmp_path / "c")
    scheme = CartScheme(fast_config(text_rank=3, num_clusters=8, codebook_size=4,
                                    fine_quantizer="kmeans")).fit(corpus.embeddings,
                                                                  corpus=corpus)
    v = scheme.projection_.numpy()
    assert v.shape == (16, 3) and scheme.dim_ == 16
    assert np.allclose(v.T @ v, np.eye(3), atol=1e-5)
    info = scheme.fit_info_["text_projection"]
    assert info["rank"] == 3 and info["items_with_captions"] == 480
    assert info["explained"] > 0.9 and info["vocabulary"] >= len(COLORS)
    assert 1 <= info["features"] <= min(512, info["vocabulary"] - 1)
    # the caption's color separates the items far better than random or PCA 3-d projections
    x = np.asarray(corpus.embeddings, dtype=np.float64)
    projected = _within_over_total(x @ v, color)
    rng = np.random.default_rng(0)
    random = [_within_over_total(x @ np.linalg.qr(rng.normal(size=(16, 3)))[0], color)
              for _ in range(10)]
    pca = np.linalg.svd(x - x.mean(0), full_matrices=False)[2][:3].T
    assert projected < 0.5 * min(random), (projected, random)
    assert projected < 0.5 * _within_over_total(x @ pca, color)
    assert np.abs(v[3:5]).max() < 0.3  # the (larger) nuisance dimensions mostly left out
    # decode lives in the projected space
    assert scheme.decode(scheme.encode(x[:5])).shape == (5, 3)


def test_text_rank_adapts_to_the_embedding_dimension(tmp_path: Path, fast_config) -> None:
    corpus, _ = _attribute_corpus(tmp_path / "c", dim=6)
    scheme = CartScheme(fast_config(text_rank=64, num_clusters=4, codebook_size=4,
                                    fine_quantizer="kmeans")).fit(corpus.embeddings,
                                                                  corpus=corpus)
    assert scheme.config_.text_rank == 6 == scheme.fit_info_["text_projection"]["rank"]
    assert scheme.projection_.shape == (6, 6)


# ----------------------------------------------------------------------------- (c)


# 3 text-predictable dimensions hold 8 colors: many items share codes (a DataWarning)
@pytest.mark.filterwarnings("ignore:.*collision rate")
@pytest.mark.parametrize("fine", ["kmeans", "rqvae"])
def test_projected_index_round_trips(tmp_path: Path, fast_config, fine: str) -> None:
    corpus, _ = _attribute_corpus(tmp_path / "c")
    index = build_index(corpus, fast_config(text_rank=4, fine_quantizer=fine),
                        show_progress=False)
    assert index.config.text_rank == 4 and index.config.fine_quantizer == fine
    assert index.stats["fit"]["text_projection"]["rank"] == 4
    saved = load_index(index.save(tmp_path / "idx"), corpus=corpus)
    assert saved.config.text_rank == 4 and saved.config.fine_quantizer == fine
    state = saved.scheme.state_dict()
    assert tuple(state["text.projection"].shape) == (16, 4)
    assert any(k.startswith("rqvae.") for k in state) == (fine == "rqvae")
    raw = np.asarray(corpus.embeddings)  # live-added items come as raw embeddings
    assert np.array_equal(saved.encode(raw), index.encode(raw))
    assert np.array_equal(saved.encode(raw), index.codes[:, :-1])


def test_projection_shape_is_checked_on_load(tmp_path: Path, fast_config) -> None:
    corpus, _ = _attribute_corpus(tmp_path / "c")
    scheme = CartScheme(fast_config(text_rank=4, fine_quantizer="kmeans")).fit(
        corpus.embeddings, corpus=corpus)
    tensors = scheme.state_dict()
    tensors["text.projection"] = tensors["text.projection"][:, :3]
    from gcmr.errors import ArtifactError

    with pytest.raises(ArtifactError, match="text.projection has shape"):
        CartScheme.from_state(scheme.config_, tensors, scheme.state_info())


def test_cli_builds_a_projected_kmeans_index(tmp_path: Path, capsys) -> None:
    corpus, _ = _attribute_corpus(tmp_path / "c")
    out = tmp_path / "idx"
    assert main(["index", str(corpus.path), str(out), "--clusters", "4", "--codebook-size",
                 "4", "--text-rank", "4", "--fine-quantizer", "kmeans", "--quiet"]) == 0
    assert "fine2" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["text_rank"] == 4
    assert manifest["config"]["fine_quantizer"] == "kmeans"
    assert main(["index", str(corpus.path), str(tmp_path / "o2"), "--scheme", "rq",
                 "--text-rank", "4"]) == 2
    assert "text_rank" in capsys.readouterr().err


def test_defaults_project_when_captions_exist_and_say_so_when_not(tmp_path: Path,
                                                                   capsys) -> None:
    corpus, _ = _attribute_corpus(tmp_path / "c")
    assert main(["index", str(corpus.path), str(tmp_path / "a"), "--clusters", "4",
                 "--codebook-size", "4", "--epochs", "2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "--epochs: RQ-VAE options, unused with --fine-quantizer kmeans" in err
    config = json.loads((tmp_path / "a" / "manifest.json").read_text())["config"]
    assert config["fine_quantizer"] == "kmeans" and config["text_rank"] > 0  # 64, adapted
    bare, _ = _attribute_corpus(tmp_path / "bare", captions=False)
    assert main(["index", str(bare.path), str(tmp_path / "b"), "--clusters", "4",
                 "--codebook-size", "4", "--quiet"]) == 0
    assert "too few for the text projection" in capsys.readouterr().err
    config = json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]
    assert config["text_rank"] == 0


# ----------------------------------------------------------------------------- (d)


def test_text_rank_needs_captions(tmp_path: Path, fast_config) -> None:
    corpus, _ = _attribute_corpus(tmp_path / "bare", captions=False)
    with pytest.raises(ConfigError, match=str(corpus.path)):
        build_index(corpus, fast_config(text_rank=4), show_progress=False)
    with pytest.raises(ConfigError, match="without a corpus"):
        CartScheme(fast_config(text_rank=4)).fit(np.asarray(corpus.embeddings))


def test_new_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="fine_quantizer"):
        IndexConfig(fine_quantizer="pq")
    with pytest.raises(ConfigError, match="text_rank"):
        IndexConfig(text_rank=-1)
    with pytest.raises(ConfigError, match="cart only"):
        IndexConfig(scheme="rq", text_rank=8)
    with pytest.raises(ConfigError, match="does not apply to --scheme hkmeans"):
        IndexConfig(scheme="hkmeans").check_options(
            ["fine_quantizer"], names={"fine_quantizer": "--fine-quantizer"})
    with pytest.raises(ConfigError, match="one view at a time"):
        IndexConfig(text_rank=8, fit_view="joint")
    with pytest.raises(ConfigError, match="does not apply to --scheme rq"):
        IndexConfig(scheme="rq").check_options(["text_rank"],
                                               names={"text_rank": "--text-rank"})
    IndexConfig(scheme="cart").check_options(["text_rank", "fine_quantizer"])


# ----------------------------------------------------------------------------- (e)


def test_index_dirs_without_the_new_fields_load_as_published(
        tmp_path: Path, small_corpus, fast_config) -> None:
    old = IndexConfig().to_dict()
    del old["text_rank"], old["fine_quantizer"]
    config = IndexConfig.from_dict(old)  # a config file: today's defaults
    assert config.text_rank is None and config.fine_quantizer == "kmeans"
    # an index directory from before the fields existed was built as published
    index = build_index(small_corpus, fast_config(epochs=1, fine_quantizer="rqvae",
                                                  text_rank=0), show_progress=False)
    out = index.save(tmp_path / "idx")
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["config"]["text_rank"], manifest["config"]["fine_quantizer"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    saved = load_index(out)
    assert saved.config.text_rank == 0 and saved.config.fine_quantizer == "rqvae"
    assert np.array_equal(saved.encode(small_corpus.embeddings), index.codes[:, :-1])
