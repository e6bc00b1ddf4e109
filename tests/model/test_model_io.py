"""Model directory formats (gcmr.model.io): directories written by gcmr 0.1, before the query
encoder became one shared module, still load and search to the same results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gcmr.errors import ArtifactError
from gcmr.model import DenseTower, GenerativeRetrievalModel
from gcmr.model.io import (
    index_fingerprint,
    load_dense_tower,
    load_generative,
    manifest_format,
    save_weights,
)
from gcmr.model.layers import QueryEncoder
from gcmr.search import Searcher
from gcmr.search.dense import DenseRetriever
from gcmr.search.retriever import Retriever

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy_v0_1"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """The committed gcmr 0.1 directories (corpus, index, CART model, dense model), copied so
    a test can move them; their manifests hold the paths of the machine that wrote them."""
    shutil.copytree(LEGACY, tmp_path / "legacy")
    return tmp_path / "legacy"


def test_legacy_generative_model_loads_and_searches_the_same(legacy: Path) -> None:
    expected = json.loads((legacy / "expected.json").read_text())
    retriever = Retriever.load(legacy / "model", index_path=legacy / "index", device="cpu")
    assert isinstance(retriever.model.query_encoder, QueryEncoder)
    scores, ids = retriever.search(expected["queries"], k=3)
    assert ids.tolist() == expected["model"]["ids"]
    np.testing.assert_allclose(scores, expected["model"]["scores"], rtol=1e-5, atol=1e-5)


def test_legacy_dense_model_loads_and_searches_the_same(legacy: Path) -> None:
    expected = json.loads((legacy / "expected.json").read_text())
    searcher = DenseRetriever.load(legacy / "dense", device="cpu", corpus_path=legacy / "corpus")
    assert isinstance(searcher.tower.query_encoder, QueryEncoder)
    scores, ids = searcher.search(expected["queries"], k=3)
    assert ids.tolist() == expected["dense"]["ids"]
    np.testing.assert_allclose(scores, expected["dense"]["scores"], rtol=1e-5, atol=1e-5)


def test_both_searchers_satisfy_the_searcher_protocol(legacy: Path) -> None:
    gen = Retriever.load(legacy / "model", index_path=legacy / "index", device="cpu")
    dense = DenseRetriever.load(legacy / "dense", device="cpu", corpus_path=legacy / "corpus")
    assert isinstance(gen, Searcher) and isinstance(dense, Searcher)


def test_load_functions_and_format_peek(legacy: Path) -> None:
    model, _, manifest = load_generative(legacy / "model")
    assert isinstance(model, GenerativeRetrievalModel) and manifest["format"] == "gcmr-model"
    tower, _, dense_manifest = load_dense_tower(legacy / "dense")
    assert isinstance(tower, DenseTower) and dense_manifest["format"] == "gcmr-dense"
    assert manifest_format(legacy / "model") == "gcmr-model"
    with pytest.raises(ArtifactError, match="missing manifest"):
        manifest_format(legacy / "corpus")
    with pytest.raises(ArtifactError, match="missing manifest"):
        manifest_format(legacy / "expected.json")  # a file, not a directory


def test_missing_and_mismatched_weights_name_the_file(legacy: Path) -> None:
    (legacy / "model" / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="model.safetensors: missing weights"):
        load_generative(legacy / "model")
    tower, _, _ = load_dense_tower(legacy / "dense")
    state = tower.state_dict()
    state.pop("head.projection.bias")
    save_weights(legacy / "dense" / "model.safetensors", state)
    with pytest.raises(ArtifactError, match="do not match the tower config"):
        load_dense_tower(legacy / "dense")


def test_index_fingerprint_binds_codes(legacy: Path) -> None:
    from gcmr.ids import load_index

    index = load_index(legacy / "index")
    manifest = json.loads((legacy / "model" / "manifest.json").read_text())
    assert index_fingerprint(index) == manifest["index"]["fingerprint"]
    index.codes = index.codes.copy()
    index.codes[0, -1] += 1
    assert index_fingerprint(index) != manifest["index"]["fingerprint"]


def test_generative_model_and_dense_tower_share_one_encoder_and_its_init() -> None:
    from gcmr.model import DenseTowerConfig, ModelConfig

    shape = {"vocab_size": 50, "d_model": 16, "n_heads": 2, "d_ff": 32, "encoder_layers": 2,
             "seed": 3}
    gen = GenerativeRetrievalModel(ModelConfig(level_sizes=[4, 4], **shape))
    tower = DenseTower(DenseTowerConfig(item_dim=8, **shape))
    a, b = gen.query_encoder.state_dict(), tower.query_encoder.state_dict()
    # same embedding and layer weights from the same seed (the norms differ in number)
    for key in ("token_embedding.weight", "position_embedding.weight",
                "layers.0.attn.qkv.weight", "layers.1.ffn.3.weight"):
        assert torch.equal(a[key], b[key]), key
    assert len(gen.query_encoder.norms) == 2 and len(tower.query_encoder.norms) == 1
