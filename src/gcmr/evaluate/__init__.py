"""Evaluation: metrics (pure functions) and the evaluation runner (benchmarks live in
:mod:`gcmr.bench`)."""

from gcmr.evaluate.metrics import mrr_at_k, recall_at_k, retrieval_metrics

__all__ = ["mrr_at_k", "recall_at_k", "retrieval_metrics"]
