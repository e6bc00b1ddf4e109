"""Evaluation runner: search a query split and score it with the pure metric functions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.corpus import Corpus
from gcmr.errors import GcmrError
from gcmr.evaluate.metrics import retrieval_metrics


def split_candidates(corpus: Corpus, split: str) -> np.ndarray:
    """Rows of the items relevant to any query of ``split`` (the paper's candidate pool)."""
    rows = corpus.relevant_rows(split)
    return np.unique(np.concatenate(rows)) if rows else np.zeros(0, dtype=np.int64)


def sample_queries(corpus: Corpus, split: str, max_queries: int | None = None, *,
                   seed: int = 0) -> tuple[list[str], list[np.ndarray]]:
    """The texts and relevant rows of a split, or of a seeded subsample of ``max_queries``
    of them (sorted, so the same seed always picks the same queries)."""
    queries = corpus.split(split)
    relevant = corpus.relevant_rows(split)
    if max_queries is not None and len(queries) > max_queries:
        pick = np.sort(np.random.default_rng(seed).choice(len(queries), max_queries, replace=False))
        queries = [queries[i] for i in pick]
        relevant = [relevant[i] for i in pick]
    return [q.text for q in queries], relevant


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

    An empty split raises :class:`~gcmr.errors.GcmrError` naming its file: all-zero metrics
    of no queries would read as a model that finds nothing.
    """
    texts, relevant = sample_queries(corpus, split, max_queries, seed=seed)
    if not texts:
        raise GcmrError(f"{Path(corpus.path) / 'queries' / f'{split}.jsonl'}: query split "
                        f"{split!r} has no queries; nothing to evaluate")
    candidates = split_candidates(corpus, split) if restrict_to_split else None
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


def choose_fusion_weight(cosines: np.ndarray, logprobs: np.ndarray, rows: np.ndarray,
                         relevant: Sequence[np.ndarray], *, metric: str = "MRR@10",
                         weights: Sequence[float] | None = None
                         ) -> tuple[float, dict[str, float]]:
    """The hybrid search's fusion weight (:mod:`gcmr.search.rerank`) with the best ``metric``
    on held-out queries: one candidate search (``cosines``, ``logprobs``, ``rows`` [Q, C]),
    every weight scored on it. Returns ``(weight, {weight: metric})``; ties go to the smaller
    weight."""
    from gcmr.search.rerank import WEIGHT_GRID, fuse, rank

    weights = WEIGHT_GRID if weights is None else weights
    table: dict[str, float] = {}
    best_w, best = 0.0, -1.0
    for w in weights:
        _, ranked = rank(fuse(cosines, logprobs, w), rows, 10)
        value = retrieval_metrics(ranked, relevant)[metric]
        table[f"{w:g}"] = round(float(value), 5)
        if value > best + 1e-12:
            best_w, best = float(w), value
    return best_w, table
