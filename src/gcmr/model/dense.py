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

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gcmr.errors import ConfigError
from gcmr.model.config import EncoderConfig
from gcmr.model.layers import ENCODER_LEGACY_KEYS, QueryEncoder, register_legacy_keys, xavier_init_

POOLINGS = ("mean", "first")


@dataclass
class DenseTowerConfig(EncoderConfig):
    """Shape of the query tower (saved in the dense model manifest): the query encoder's fields
    (keyword-only, :class:`EncoderConfig`'s defaults) plus the projection into the item space."""

    item_dim: int  # D of the corpus embeddings: the tower projects into that space
    pooling: str = "mean"  # mean | first
    temperature: float = 0.07  # initial InfoNCE temperature (CLIP's init)
    learn_temperature: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.item_dim < 1:
            raise ConfigError(f"item_dim must be >= 1, got {self.item_dim}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if not 0.0 < self.temperature <= 10.0:
            raise ConfigError(f"temperature must be in (0, 10], got {self.temperature}")


class DenseTower(nn.Module):
    """Query tower: tokens -> :class:`QueryEncoder` -> pooled -> projected into the item
    space -> L2-normalized [B, D]."""

    max_logit_scale = 100.0  # CLIP clamps exp(log_scale) at 100
    # parameter names before the query encoder became its own module (dense dirs of gcmr 0.1)
    LEGACY_KEYS: ClassVar[dict[str, str]] = {**ENCODER_LEGACY_KEYS,
                                             "final_norm.": "query_encoder.norms.0."}

    def __init__(self, config: DenseTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.query_encoder = QueryEncoder(**config.encoder_kwargs(), norms="last")
        self.projection = nn.Linear(config.d_model, config.item_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)),
                                      requires_grad=config.learn_temperature)
        register_legacy_keys(self, self.LEGACY_KEYS)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The generative model's initialization (:func:`xavier_init_` from ``config.seed``:
        the same seed gives both models the same encoder weights) and the initial temperature."""
        xavier_init_(self, self.config.seed)
        self.log_scale.fill_(math.log(1.0 / self.config.temperature))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.config.max_query_length:
            raise ConfigError(f"queries have {t} tokens, the tower takes at most "
                              f"{self.config.max_query_length}")
        (x,), mask = self.query_encoder(input_ids, attention_mask)
        keep = mask[:, 0, 0, :]
        if self.config.pooling == "first":
            pooled = x[:, 0]
        else:
            w = keep.unsqueeze(-1).to(x.dtype)
            pooled = (x * w).sum(1) / w.sum(1).clamp(min=1.0)
        return F.normalize(self.projection(pooled).float(), dim=-1)
