"""Evaluation runner: search a query split and score it with the pure metric functions."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gcmr.corpus import Corpus
from gcmr.evaluate.metrics import retrieval_metrics


def split_candidates(corpus: Corpus, split: str) -> np.ndarray:
    """Rows of the items relevant to any query of ``split`` (the paper's candidate pool)."""
    rows = corpus.relevant_rows(split)
    return np.unique(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)


def evaluate(
    searcher: Any,
    corpus: Corpus,
    split: str = "test",
    *,
    k: int = 10,
    beam: int | None = None,
    restrict_to_split: bool = False,
    max_queries: int | None = None,
    seed: int = 0,
    beam_only: bool = False,
) -> dict[str, Any]:
    """R@1/5/10 and MRR@10 of ``searcher.search_rows`` on a query split.

    ``searcher`` is anything with ``search_rows(texts, k=, beam=, candidates=) -> (scores, rows)``
    (the generative :class:`~gcmr.search.retriever.Retriever` or a dense retriever).
    ``restrict_to_split`` ranks only the split's own items (CART/AVG paper protocol: e.g. the
    1k test images of Flickr30K); the default ranks every corpus item. The corpus oracle
    ceiling is reported when it exists and applies (all-items pool).

    ``beam_only`` (the papers' beam-size ablation, AVG table 7): a beam narrower than ``k``
    returns only its ``beam`` identifiers, and the ranking is padded to ``k`` (so R@10 of
    beam 5 counts 5 results), instead of the search widening to ``k`` (the rule of
    :func:`gcmr.search.beam.effective_beam`).
    """
    queries = corpus.split(split)
    relevant = corpus.relevant_rows(split)
    if max_queries is not None and len(queries) > max_queries:
        pick = np.sort(np.random.default_rng(seed).choice(len(queries), max_queries, replace=False))
        queries = [queries[i] for i in pick]
        relevant = [relevant[i] for i in pick]
    candidates = split_candidates(corpus, split) if restrict_to_split else None
    texts = [q.text for q in queries]
    t0 = time.perf_counter()
    width = min(k, beam) if beam_only and beam is not None else k
    _, rows = searcher.search_rows(texts, k=width, beam=beam, candidates=candidates)
    if width < k:
        rows = np.pad(rows, ((0, 0), (0, k - width)), constant_values=-1)
    seconds = time.perf_counter() - t0
    metrics = retrieval_metrics(rows, relevant, ks=tuple(x for x in (1, 5, 10) if x <= k),
                                mrr_k=min(10, k))
    oracle = None
    if corpus.oracle and split in corpus.oracle and not restrict_to_split:
        oracle = corpus.oracle[split]
    return {
        "split": split,
        "queries": len(texts),
        "pool": "split items" if restrict_to_split else "all items",
        "candidates": int(len(candidates)) if candidates is not None else len(corpus),
        "k": k,
        "beam": beam,
        "beam_only": beam_only,
        "metrics": metrics,
        "oracle": oracle,
        "fraction_of_oracle": {m: metrics[m] / oracle[m] for m in metrics
                               if oracle and oracle.get(m)} if oracle else None,
        "seconds": round(seconds, 3),
        "queries_per_s": round(len(texts) / max(seconds, 1e-9), 1),
    }
