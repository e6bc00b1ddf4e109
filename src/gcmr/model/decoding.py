"""Teacher forcing over identifiers, shared by every generative backbone.

A backbone (our :class:`~gcmr.model.GenerativeRetrievalModel`, the pretrained
:class:`~gcmr.model.t5_backbone.T5Backbone`) provides the pieces that differ: ``start_token``
(the decoder-input id of the first step), ``token_ids(level, codes)`` (level-local codes ->
decoder-input ids), ``decoder_hidden(enc, tokens)`` (final hidden states of teacher-forced
token sequences) and ``level_logits(hidden, level)``. :class:`IdentifierDecoder` builds the
rest on them once: ``decode_logits``, ``forward``, ``sequence_log_prob`` and ``score_codes``,
which CART's and AVG's losses, exhaustive scoring and the beam-search tests use.
"""

from __future__ import annotations

from typing import Any

import torch

from gcmr.errors import ConfigError


class IdentifierDecoder:
    """Mixin for ``nn.Module`` backbones that generate identifiers level by level."""

    start_token: int
    level_size_tensor: torch.Tensor

    @property
    def level_sizes(self) -> list[int]:
        return self.config.level_sizes  # type: ignore[attr-defined]

    @property
    def num_levels(self) -> int:
        return len(self.level_sizes)

    # provided by the backbone
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        raise NotImplementedError

    def token_ids(self, level: int | torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decoder_hidden(self, enc: Any, tokens: torch.Tensor) -> torch.Tensor:
        """Final hidden states [B, K, n, d] of teacher-forced decoder inputs [B, K, n]."""
        raise NotImplementedError

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        raise NotImplementedError

    def level_bias(self, enc: Any, level: int) -> torch.Tensor | None:
        """Per-query scores [B, level_sizes[level]] added to every position's logits of
        ``level`` (the code vectors of :class:`~gcmr.model.GenerativeRetrievalModel`); None
        for backbones without them."""
        return None

    # shared
    def biased_logits(self, hidden: torch.Tensor, level: int, enc: Any = None) -> torch.Tensor:
        """``level_logits`` of hidden states [B, ..., d] plus the query's ``level_bias``."""
        logits = self.level_logits(hidden, level)
        bias = self.level_bias(enc, level)
        if bias is None:
            return logits
        return logits + bias.view(bias.shape[0], *[1] * (logits.dim() - 2), bias.shape[1])

    def level_log_probs(self, hidden: torch.Tensor, level: int, enc: Any = None) -> torch.Tensor:
        """Log-softmax over the codes of ``level`` (CART eq. 6 factor of that step); ``enc``
        (the queries' encoder output) adds the code vectors' scores where the model has them."""
        return torch.log_softmax(self.biased_logits(hidden, level, enc).float(), dim=-1)

    def decode_logits(self, enc: Any, codes: torch.Tensor) -> torch.Tensor:
        """Teacher forcing on encoded queries: ``codes`` [B, L] or [B, K, L] (K candidate
        identifiers per query) -> logits [B, (K,) L, Vmax]; step ``l`` sees the start token +
        codes[..., :l]; entries at or beyond ``level_sizes[l]`` are -inf."""
        squeeze = codes.dim() == 2
        if squeeze:
            codes = codes.unsqueeze(1)
        b, k, n = codes.shape
        if b != enc.batch_size or n != self.num_levels:
            raise ConfigError(f"codes must be [{enc.batch_size}, (K,) {self.num_levels}], got "
                              f"{tuple(codes[:, 0].shape if squeeze else codes.shape)}")
        if bool(((codes < 0) | (codes >= self.level_size_tensor)).any()):
            raise ConfigError(f"codes fall outside the level sizes {self.level_sizes}")
        start = torch.full((b, k, 1), self.start_token, dtype=torch.int64, device=codes.device)
        levels = torch.arange(n - 1, device=codes.device)
        tokens = torch.cat([start, self.token_ids(levels, codes[..., :-1])], dim=-1)
        hidden = self.decoder_hidden(enc, tokens)  # [B, K, L, d]
        vmax = max(self.level_sizes)
        logits = hidden.new_full((b, k, n, vmax), float("-inf"))
        for level in range(n):
            logits[:, :, level, :self.level_sizes[level]] = self.biased_logits(
                hidden[:, :, level], level, enc)
        return logits[:, 0] if squeeze else logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                codes: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, L, Vmax] (or [B, K, L, Vmax] for codes [B, K, L])."""
        return self.decode_logits(self.encode(input_ids, attention_mask), codes)

    def sequence_log_prob(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          codes: torch.Tensor) -> torch.Tensor:
        """``log p(codes | query)`` = sum over levels of the level log-softmax (differentiable).

        ``codes`` [B, L] -> [B]; [B, K, L] -> [B, K] (the query is encoded once for its K
        candidates, e.g. to rescore beam-search results with gradients).
        """
        return self.score_codes(self.encode(input_ids, attention_mask), codes)

    def score_codes(self, enc: Any, codes: torch.Tensor) -> torch.Tensor:
        """:meth:`sequence_log_prob` on already encoded queries."""
        logp = torch.log_softmax(self.decode_logits(enc, codes).float(), dim=-1)
        return logp.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(-1)
