"""Evaluation: metrics (pure functions), evaluation runner, benchmark helpers."""

from gcmr.evaluate.metrics import mrr_at_k, recall_at_k, retrieval_metrics

__all__ = ["mrr_at_k", "recall_at_k", "retrieval_metrics"]
