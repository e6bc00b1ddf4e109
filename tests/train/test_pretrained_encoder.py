"""The pretrained query-encoder option: frozen features cached once per training text
(reused, invalidated when the texts change), the model directory self-contained, fine-tuning
at its own learning rate, and text-space hybrid rerank over the items' caption vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gcmr.artifacts import load_tensors
from gcmr.errors import ConfigError
from gcmr.model.pretrained import FeatureCache, resolve_source
from gcmr.search.rerank import CaptionVectors
from gcmr.search.retriever import Retriever
from gcmr.train import TrainConfig, train
from tests.train.test_trainer import tiny_train_config

MODEL = {"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 2, "decoder_layers": 1,
         "dropout": 0.1}


def config(bert: Path, cache: Path, **changes) -> TrainConfig:
    return tiny_train_config(query_encoder=str(bert), feature_cache=str(cache), **changes)


def test_frozen_encoder_trains_caches_and_loads_self_contained(
        tiny_index: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    train(tiny_index, tmp_path / "m", config=config(tiny_bert_dir, cache), model_options=MODEL,
          show_progress=False)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    spec = manifest["model_config"]["pretrained"]
    assert spec["frozen"] is True and spec["hf_config"]["model_type"] == "bert"
    # frozen: the backbone's weights are the checkpoint's, bit for bit
    weights = load_tensors(tmp_path / "m" / "model.safetensors")
    source = load_tensors(tiny_bert_dir / "model.safetensors")
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(weights[f"query_encoder.backbone.{key}"], source[key])
    # one cache directory, holding each distinct training text once
    (entry,) = list(cache.iterdir())
    assert json.loads((entry / "meta.json").read_text())["sequences"] == 40 * 2 + 20
    # self-contained: the checkpoint directory is not needed to search
    rerank = manifest["rerank"]
    assert rerank["item_vectors"] in ("embeddings", "captions", "blend")
    assert set(rerank["by_item_vectors"]) == {"embeddings", "captions", "blend:0.25", "blend:0.5",
                                              "blend:0.75"}
    retriever = Retriever.load(tmp_path / "m")
    _, ids = retriever.search(["red thing number 4", "blue 5"], k=3)
    assert ids.shape == (2, 3) and all(i for i in ids.ravel())


def test_feature_cache_reused_and_invalidated(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from gcmr.model import GenerativeRetrievalModel, ModelConfig
    from gcmr.model.pretrained import pretrained_spec
    from gcmr.model.tokenizer import PretrainedQueryTokenizer

    spec = pretrained_spec(str(tiny_bert_dir), frozen=True)
    tok = PretrainedQueryTokenizer.from_source(tiny_bert_dir, max_length=16)
    model = GenerativeRetrievalModel(ModelConfig(vocab_size=tok.vocab_size, level_sizes=[4, 4],
                                                 pretrained=spec, **MODEL)).eval()
    model.query_encoder.load_source(tiny_bert_dir)
    texts = ["a red thing", "the blue dog 7", "a red thing", "gold cat"]
    ids, mask = tok.encode_batch(texts)
    calls = []
    original = model.query_encoder.frozen_features

    def counting(i, m):
        calls.append(i.shape[0])
        return original(i, m)

    model.query_encoder.frozen_features = counting
    first = FeatureCache.build(model.query_encoder, ids.to(torch.int32), mask.sum(1),
                               pad_id=tok.pad_id, root=tmp_path)
    assert len(first) == 3 and sum(calls) == 3  # distinct texts, computed once
    calls.clear()
    again = FeatureCache.build(model.query_encoder, ids.to(torch.int32), mask.sum(1),
                               pad_id=tok.pad_id, root=tmp_path)
    assert again.directory == first.directory and calls == []  # reused, nothing computed
    # lookups equal fresh computation at the real tokens, and count hits / misses
    fresh = original(ids, mask)
    got = again.lookup(ids, mask, counting)
    real = mask[None, :, :, None]
    assert torch.equal(got * real, fresh * real) and calls == []
    other_ids, other_mask = tok.encode_batch(["a red thing", "green 9"])
    again.lookup(other_ids, other_mask, counting)
    assert (again.hits, again.misses) == (5, 1) and calls == [1]
    # changed texts: another key, another cache
    changed = texts[:3] + ["gold cat 8"]
    ids2, mask2 = tok.encode_batch(changed)
    third = FeatureCache.build(model.query_encoder, ids2.to(torch.int32), mask2.sum(1),
                               pad_id=tok.pad_id, root=tmp_path)
    assert third.directory != first.directory
    # other weights: another key as well
    with torch.no_grad():
        model.query_encoder.backbone.embeddings.word_embeddings.weight[5] += 1.0
    fourth = FeatureCache.build(model.query_encoder, ids.to(torch.int32), mask.sum(1),
                                pad_id=tok.pad_id, root=tmp_path)
    assert fourth.directory not in (first.directory, third.directory)


def test_text_vectors_are_the_sentence_embedding(tiny_bert_dir: Path) -> None:
    """The query's text vector is the mean-pooled last layer, normalized (sentence-
    transformers' MiniLM recipe), independent of the batch's padding."""
    from gcmr.model.pretrained import PretrainedQueryEncoder, pretrained_spec
    from gcmr.model.tokenizer import PretrainedQueryTokenizer

    transformers = pytest.importorskip("transformers")
    enc = PretrainedQueryEncoder(pretrained_spec(str(tiny_bert_dir), frozen=True), d_model=16,
                                 num_layers=2, dropout=0.0)
    enc.load_source(tiny_bert_dir)
    tok = PretrainedQueryTokenizer.from_source(tiny_bert_dir, max_length=16)
    ids, mask = tok.encode_batch(["red thing number 4", "dog"])
    _, _, text = enc.encode_with_text(ids, mask)
    bert = transformers.AutoModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        for i in range(2):
            n = int(mask[i].sum())
            ref = bert(input_ids=ids[i:i + 1, :n]).last_hidden_state[0].mean(0)
            assert torch.allclose(text[i], torch.nn.functional.normalize(ref, dim=0),
                                  atol=2e-3)


def test_caption_vectors_with_all_candidates_equal_max_over_captions() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(7, 5)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    offsets = np.array([0, 2, 2, 5, 7])  # item 1 has no captions
    cv = CaptionVectors(vecs.astype(np.float16), offsets)
    q = torch.nn.functional.normalize(torch.randn(3, 5), dim=-1)
    rows = np.array([[0, 1, 2, 3], [3, 2, -1, -1], [1, 0, 3, -1]])
    got = cv.cosines(q, rows)
    v16 = vecs.astype(np.float16).astype(np.float32)
    for i in range(3):
        for j, r in enumerate(rows[i]):
            if r < 0:
                assert got[i, j] == -np.inf
            elif offsets[r] == offsets[r + 1]:
                assert got[i, j] == -1.0
            else:
                ref = (v16[offsets[r]:offsets[r + 1]] @ q[i].numpy()).max()
                assert got[i, j] == pytest.approx(ref, abs=1e-5)


def test_finetune_trains_the_encoder_at_its_own_rate(tiny_index: Path, tiny_bert_dir: Path,
                                                     tmp_path: Path) -> None:
    cfg = config(tiny_bert_dir, tmp_path / "cache", finetune_encoder=True, encoder_lr=1e-4,
                 epochs=1, val_split=None, dense_weight=0.0)
    train(tiny_index, tmp_path / "m", config=cfg, model_options=MODEL, show_progress=False)
    weights = load_tensors(tmp_path / "m" / "model.safetensors")
    source = load_tensors(tiny_bert_dir / "model.safetensors")
    key = "encoder.layer.0.attention.self.query.weight"
    moved = (weights[f"query_encoder.backbone.{key}"] - source[key]).abs().max()
    assert 0 < moved < 0.05  # trained, at a small rate
    assert not (tmp_path / "cache").exists()  # fine-tuning caches nothing
    Retriever.load(tmp_path / "m", rerank="none").search("red 4", k=2)


def test_bad_specs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a local model directory"):
        resolve_source(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_source(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="exclusive"):
        TrainConfig(query_encoder="minilm", backbone="t5:x")
    with pytest.raises(ConfigError, match="needs a pretrained"):
        TrainConfig(finetune_encoder=True)
