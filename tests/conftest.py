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


@pytest.fixture(autouse=True)
def _tiny_training_budgets(request, monkeypatch):
    """Tests train tiny corpora for a few steps: the library's step floor for small corpora
    (TrainConfig.min_steps None = DEFAULT_MIN_STEPS) is off in-process unless a test asks for
    the real defaults (``@pytest.mark.real_defaults``)."""
    if request.node.get_closest_marker("real_defaults") is None:
        monkeypatch.setattr("gcmr.train.config.DEFAULT_MIN_STEPS", 0)


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


class BagOfWords:
    """A deterministic stand-in text encoder (for the caption matcher): word counts over a
    fixed vocabulary."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = {w: i for i, w in enumerate(vocab)}

    def encode_text(self, texts):
        out = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                if w in self.vocab:
                    out[i, self.vocab[w]] += 1
        return out + 1e-3  # no all-zero rows


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus")


@pytest.fixture
def corpus_factory(tmp_path: Path):
    """``corpus_factory(name, n=..., dim=..., seed=...)`` writes a tiny corpus under tmp_path."""

    def factory(name: str = "corpus", **kwargs) -> Path:
        return make_corpus(tmp_path / name, **kwargs)

    return factory


T5_WORDS = ["<pad>", "</s>", "<unk>", "a", "the", "dog", "cat", "red", "car", "runs", "on",
            "beach", "city", "blue", "green", "gold", "item", "one", "photo", "of", "thing"]


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> Path:
    """A tiny random-weight T5 (d_model 32, one layer each, vocab 100) saved with
    ``save_pretrained`` beside a word-level ``tokenizer.json``: what a user's local T5
    checkpoint directory looks like, without any download."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    path = tmp_path_factory.mktemp("t5") / "tiny-t5"
    config = transformers.T5Config(vocab_size=100, d_model=32, d_ff=64, d_kv=16, num_layers=1,
                                   num_decoder_layers=1, num_heads=2, pad_token_id=0,
                                   eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(config).save_pretrained(path)
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {w: i for i, w in enumerate(T5_WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)])
    tok.save(str(path / "tokenizer.json"))
    return path


BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "the", "photo", "of", "thing", "number",
              "one", "item", "red", "blue", "green", "gold", "dog", "cat"] + \
    [str(i) for i in range(100)]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random-weight BERT (hidden 32, 3 layers) saved with ``save_pretrained`` beside a
    word-level ``tokenizer.json`` with BERT's [CLS] / [SEP] template: a local pretrained text
    encoder directory, as a user's would look, without any download."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    path = tmp_path_factory.mktemp("bert") / "tiny-bert"
    config = transformers.BertConfig(vocab_size=len(BERT_WORDS), hidden_size=32,
                                     num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64,
                                     pad_token_id=0)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(path)
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {w: i for i, w in enumerate(BERT_WORDS)}, unk_token="[UNK]"))
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(path / "tokenizer.json"))
    return path
