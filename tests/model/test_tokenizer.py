"""Query tokenizer: training, padding/truncation, empty queries, save/load round trip."""

from __future__ import annotations

import pytest
import torch

from gcmr.errors import ArtifactError, ConfigError, GcmrError
from gcmr.model import QueryTokenizer

TEXTS = ["a red car on the road", "a blue boat on the sea", "the Red Café at night",
         "two dogs playing in the snow", "a dog running on the beach"] * 10


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_train_encode_pads_to_batch_max(kind):
    tok = QueryTokenizer.train(TEXTS, vocab_size=200, max_length=16, kind=kind)
    assert tok.max_length == 16 and 16 <= tok.vocab_size <= 200
    ids, mask = tok.encode_batch(["red car", "a dog running on the beach at night"])
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert ids.shape == mask.shape and ids.shape[1] == int(mask.sum(1).max())
    assert mask[0].sum() < mask[1].sum()
    assert (ids[~mask] == tok.pad_id).all() and (ids[mask] != tok.pad_id).all()


def test_long_queries_are_truncated_not_rejected():
    tok = QueryTokenizer.train(TEXTS, vocab_size=200, max_length=5)
    ids, mask = tok.encode_batch([" ".join(["dog"] * 50)])
    assert ids.shape == (1, 5) and mask.all()


def test_lowercase_option():
    lower = QueryTokenizer.train(TEXTS, vocab_size=200)
    cased = QueryTokenizer.train(TEXTS, vocab_size=200, lowercase=False)
    assert lower.tokenize("Red CAR") == lower.tokenize("red car")
    assert cased.tokenize("Red") != cased.tokenize("red")
    assert lower.tokenize("café") == lower.tokenize("cafe")  # accents stripped


def test_empty_query_names_its_index():
    tok = QueryTokenizer.train(TEXTS, vocab_size=200)
    with pytest.raises(GcmrError, match="query 2 is empty"):
        tok.encode_batch(["red car", "dog", "   "])
    with pytest.raises(GcmrError, match="query 1 has no tokens"):
        tok.encode_batch(["red car", "\u0301"])  # a lone combining accent normalizes away


def test_save_load_round_trip(tmp_path):
    tok = QueryTokenizer.train(TEXTS, vocab_size=150, max_length=7, lowercase=False)
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    back = QueryTokenizer.load(path)
    assert (back.vocab_size, back.pad_id, back.max_length) == (tok.vocab_size, tok.pad_id, 7)
    queries = ["Red car on the road", "snow"]
    for a, b in zip(tok.encode_batch(queries), back.encode_batch(queries)):
        assert torch.equal(a, b)
    assert back.tokenize("Red") == tok.tokenize("Red")


def test_load_errors(tmp_path):
    with pytest.raises(ArtifactError, match="missing tokenizer"):
        QueryTokenizer.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupted tokenizer"):
        QueryTokenizer.load(bad)


def test_bad_options():
    with pytest.raises(ConfigError, match="kind"):
        QueryTokenizer.train(TEXTS, kind="unigram")
    with pytest.raises(ConfigError, match="zero texts"):
        QueryTokenizer.train([], vocab_size=100)
