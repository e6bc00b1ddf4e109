"""The evaluation runner: what it asks the searcher for, and the beam-size protocol."""

from __future__ import annotations

import numpy as np

from gcmr.corpus import load_corpus
from gcmr.evaluate.runner import evaluate


class RecordingSearcher:
    """Returns the relevant item of every query at rank ``hit_at`` (0-based) and records the
    arguments it was called with."""

    def __init__(self, corpus, split: str, hit_at: int) -> None:
        self.relevant = {q.text: corpus.relevant_rows(split)[i][0]
                         for i, q in enumerate(corpus.split(split))}
        self.hit_at = hit_at
        self.calls: list[dict] = []

    def search_rows(self, texts, *, k, beam=None, candidates=None):
        self.calls.append({"k": k, "beam": beam})
        rows = np.full((len(texts), k), 10_000, dtype=np.int64)
        for i, t in enumerate(texts):
            if self.hit_at < k:
                rows[i, self.hit_at] = self.relevant[t]
        return np.zeros(rows.shape, dtype=np.float32), rows


def test_beam_only_returns_only_the_beams_items(tiny_corpus) -> None:
    corpus = load_corpus(tiny_corpus)
    searcher = RecordingSearcher(corpus, "test", hit_at=6)
    wide = evaluate(searcher, corpus, "test", k=10, beam=5)
    assert searcher.calls[-1] == {"k": 10, "beam": 5} and wide["metrics"]["R@10"] == 1.0
    narrow = evaluate(searcher, corpus, "test", k=10, beam=5, beam_only=True)
    # the search is asked for 5 results; rank 7 is beyond them, so R@10 counts a miss
    assert searcher.calls[-1] == {"k": 5, "beam": 5}
    assert narrow["metrics"]["R@10"] == 0.0 and narrow["beam_only"] is True
    same = evaluate(searcher, corpus, "test", k=10, beam=20, beam_only=True)
    assert searcher.calls[-1] == {"k": 10, "beam": 20} and same["metrics"] == wide["metrics"]
