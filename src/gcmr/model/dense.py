"""The dense query tower: the dual-tower baseline's text side, the fair peer of the generative
retriever.

Same text capacity: the :class:`~gcmr.model.layers.QueryEncoder` of the generative model (its
shape fields are :class:`~gcmr.model.config.EncoderConfig`'s, with the same defaults and the
same seeded Xavier-uniform initialization), then pooling (mean over tokens, or the first
token) and a learned ``Linear(d, D)`` into the item embedding space, L2-normalized. Item
embeddings are frozen: the item tower is the corpus's multimodal encoder itself, so the
corpus's embeddings are searched directly by exact or faiss backends (:mod:`gcmr.search.dense`).
Trained by :func:`gcmr.train.dense.train_dense` with InfoNCE
(:func:`gcmr.train.losses.info_nce`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from gcmr.errors import ConfigError
from gcmr.model.config import POOLINGS, DenseTowerConfig  # torch-free home; re-exported here
from gcmr.model.layers import (
    ENCODER_LEGACY_KEYS,
    QueryEncoder,
    QueryVectorHead,
    register_legacy_keys,
    xavier_init_,
)

__all__ = ["POOLINGS", "DenseTower", "DenseTowerConfig"]


class DenseTower(nn.Module):
    """Query tower: tokens -> :class:`QueryEncoder` -> :class:`QueryVectorHead` (pooled,
    projected into the item space, L2-normalized [B, D])."""

    # parameter names of gcmr 0.1 dense dirs (before the shared encoder and head modules)
    LEGACY_KEYS: ClassVar[dict[str, str]] = {**ENCODER_LEGACY_KEYS,
                                             "final_norm.": "query_encoder.norms.0.",
                                             "projection.": "head.projection.",
                                             "log_scale": "head.log_scale"}

    def __init__(self, config: DenseTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.query_encoder = QueryEncoder(**config.encoder_kwargs(), norms="last")
        self.head = QueryVectorHead(config.d_model, config.item_dim, pooling=config.pooling,
                                    temperature=config.temperature,
                                    learn_temperature=config.learn_temperature)
        register_legacy_keys(self, self.LEGACY_KEYS)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The generative model's initialization (:func:`xavier_init_` from ``config.seed``:
        the same seed gives both models the same encoder weights) and the initial temperature."""
        xavier_init_(self, self.config.seed)
        self.head.reset_temperature()

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.head.logit_scale

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.config.max_query_length:
            raise ConfigError(f"queries have {t} tokens, the tower takes at most "
                              f"{self.config.max_query_length}")
        (x,), mask = self.query_encoder(input_ids, attention_mask)
        return self.head(x, mask)
