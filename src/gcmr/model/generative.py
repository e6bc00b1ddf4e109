"""The generative retrieval model: query encoder -> fusion decoder -> identifier tokens.

Identifiers have ``L`` levels with level-local codes ``0 .. level_sizes[l] - 1``. The decoder
reads level-tagged global token ids: row 0 of ``code_embedding`` is BOS and code ``c`` of level
``l`` is row ``1 + offsets[l] + c`` (so equal codes of different levels are different tokens),
plus a learned position (= level) embedding. Step ``l`` predicts the code of level ``l``.

The output layer is one ``Linear(d, sum(level_sizes))`` over the concatenated identifier
vocabulary whose rows are sliced per level: equivalent to per-level heads, but one weight with
the same layout as ``code_embedding[1:]`` (so it can be tied to it), and a decoding step only
multiplies by its level's slice. Only that level's codes get a logit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gcmr.errors import ConfigError
from gcmr.model.config import ModelConfig
from gcmr.model.layers import KV, CartFusion, DecoderLayer, EncoderLayer

BOS = 0


@dataclass
class EncoderOutput:
    """What the decoder needs from a batch of queries, computed once per query.

    ``layers``: the ``S`` encoder layer outputs [B, T, d] (layer-normalized);
    ``mask``: bool [B, 1, 1, T], True at real tokens (key padding mask for cross-attention);
    ``memory``: per decoder layer, the cross-attention K/V of its memories (coarse Z and the S
    layers for ``fusion = cart``; the last layer for ``none``), each [B, (S,) H, T, dh]. Every beam
    of a query reads these same tensors; nothing is copied per beam.
    """

    layers: list[torch.Tensor]
    mask: torch.Tensor
    memory: list

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]


@dataclass
class DecoderCache:
    """Self-attention K/V of the decoded prefix, per decoder layer, [B*M, H, t, dh]."""

    kv: list[KV]

    @property
    def length(self) -> int:
        return self.kv[0][0].shape[2]

    def reorder(self, index: torch.Tensor) -> DecoderCache:
        """Keep the sequences ``index`` (flat [B*M'] indices into the B*M rows), e.g. the parent
        beams that survived a beam-search step."""
        return DecoderCache([(k.index_select(0, index), v.index_select(0, index))
                             for k, v in self.kv])


class GenerativeRetrievalModel(nn.Module):
    """Encoder-decoder transformer of CART section 3.4, trained from scratch (Xavier-uniform).

    ``forward`` is teacher forcing; ``encode`` + ``decode_step`` + ``level_log_probs`` are the
    incremental decoding used by :func:`gcmr.search.beam.constrained_beam_search`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d, h, f, p = config.d_model, config.n_heads, config.d_ff, config.dropout
        sizes = config.level_sizes
        self.embed_scale = math.sqrt(d)
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.position_embedding = nn.Embedding(config.max_query_length, d)
        self.encoder = nn.ModuleList(EncoderLayer(d, h, f, p) for _ in range(config.encoder_layers))
        self.memory_norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(config.encoder_layers))
        self.code_embedding = nn.Embedding(1 + sum(sizes), d)  # BOS + level-tagged codes
        self.level_embedding = nn.Embedding(len(sizes), d)
        self.decoder = nn.ModuleList(
            DecoderLayer(d, h, f, p, fusion=config.fusion, num_memories=config.encoder_layers)
            for _ in range(config.decoder_layers))
        self.final_norm = nn.LayerNorm(d)
        self.output = None if config.tie_output_embeddings else nn.Linear(d, sum(sizes), bias=False)
        self.output_bias = nn.Parameter(torch.zeros(sum(sizes)))
        self.drop = nn.Dropout(p)
        offsets = [0]
        for size in sizes[:-1]:
            offsets.append(offsets[-1] + size)
        self.offsets = offsets
        self.register_buffer("code_offsets", torch.tensor(offsets, dtype=torch.int64),
                             persistent=False)
        self.register_buffer("level_size_tensor", torch.tensor(sizes, dtype=torch.int64),
                             persistent=False)
        self.reset_parameters()

    @property
    def level_sizes(self) -> list[int]:
        return self.config.level_sizes

    @property
    def num_levels(self) -> int:
        return len(self.config.level_sizes)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases, unit LayerNorms, from a private generator seeded
        with ``config.seed`` (the same config gives the same weights whatever the global RNG)."""
        gen = torch.Generator().manual_seed(self.config.seed)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.xavier_uniform_(module.weight, generator=gen)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            elif isinstance(module, CartFusion):
                module.init_gates(gen)
        self.output_bias.zero_()

    # ---- encoder -------------------------------------------------------------------------

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncoderOutput:
        """Run the encoder once and precompute every decoder layer's cross-attention K/V."""
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ConfigError(f"input_ids and attention_mask must both be [B, T], got "
                              f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
        t = input_ids.shape[1]
        if t > self.config.max_query_length:
            raise ConfigError(f"queries have {t} tokens, the model takes at most "
                              f"{self.config.max_query_length} (truncate them in the tokenizer)")
        x = self.token_embedding(input_ids) * self.embed_scale
        x = self.drop(x + self.position_embedding.weight[:t])
        mask = attention_mask.to(torch.bool)[:, None, None, :]
        layers = []
        for layer, norm in zip(self.encoder, self.memory_norms):
            x = layer(x, mask)
            layers.append(norm(x))
        memory = [layer.fusion.memory(layers) for layer in self.decoder]
        return EncoderOutput(layers, mask, memory)

    # ---- decoder -------------------------------------------------------------------------

    def token_ids(self, level: int | torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Global decoder-input token ids of level-local ``codes`` at ``level``."""
        return codes + 1 + self.code_offsets[level]

    def decode_step(self, enc: EncoderOutput, tokens: torch.Tensor,
                    cache: DecoderCache | None) -> tuple[torch.Tensor, DecoderCache]:
        """One incremental decoding step for ``M`` sequences per query.

        ``tokens`` [B, M] are the global ids of the newest position (BOS at the first step);
        ``cache`` holds the K/V of the earlier positions of those same B*M sequences, in the
        same order. Returns the final hidden states [B, M, d] and the extended cache.
        """
        b, m = tokens.shape
        pos = 0 if cache is None else cache.length
        x = self.code_embedding(tokens) * self.embed_scale + self.level_embedding.weight[pos]
        x = self.drop(x).unsqueeze(2)  # [B, M, 1, d]
        new_kv = []
        for i, layer in enumerate(self.decoder):
            x, kv = layer(x, enc.memory[i], enc.mask, None if cache is None else cache.kv[i])
            new_kv.append(kv)
        return self.final_norm(x.squeeze(2)), DecoderCache(new_kv)

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """Logits [..., level_sizes[level]] of the codes of ``level``."""
        start, size = self.offsets[level], self.config.level_sizes[level]
        weight = self.code_embedding.weight[1:] if self.output is None else self.output.weight
        return F.linear(hidden, weight[start:start + size], self.output_bias[start:start + size])

    def level_log_probs(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """Log-softmax over the codes of ``level`` (CART eq. 6 factor of that step)."""
        return torch.log_softmax(self.level_logits(hidden, level).float(), dim=-1)

    def decode_logits(self, enc: EncoderOutput, codes: torch.Tensor) -> torch.Tensor:
        """Teacher forcing on encoded queries: ``codes`` [B, L] or [B, K, L] (K candidate
        identifiers per query) -> logits [B, (K,) L, Vmax]; step ``l`` sees BOS + codes[..., :l];
        entries at or beyond ``level_sizes[l]`` are -inf."""
        squeeze = codes.dim() == 2
        if squeeze:
            codes = codes.unsqueeze(1)
        b, k, n = codes.shape
        if b != enc.batch_size or n != self.num_levels:
            raise ConfigError(f"codes must be [{enc.batch_size}, (K,) {self.num_levels}], got "
                              f"{tuple(codes[:, 0].shape if squeeze else codes.shape)}")
        if bool(((codes < 0) | (codes >= self.level_size_tensor)).any()):
            raise ConfigError(f"codes fall outside the level sizes {self.config.level_sizes}")
        bos = torch.full((b, k, 1), BOS, dtype=torch.int64, device=codes.device)
        levels = torch.arange(n - 1, device=codes.device)
        tokens = torch.cat([bos, self.token_ids(levels, codes[..., :-1])], dim=-1)
        x = self.code_embedding(tokens) * self.embed_scale + self.level_embedding.weight[:n]
        x = self.drop(x)
        for i, layer in enumerate(self.decoder):
            x, _ = layer(x, enc.memory[i], enc.mask)
        hidden = self.final_norm(x)  # [B, K, L, d]
        vmax = max(self.config.level_sizes)
        logits = hidden.new_full((b, k, n, vmax), float("-inf"))
        for level in range(n):
            logits[:, :, level, :self.config.level_sizes[level]] = self.level_logits(
                hidden[:, :, level], level)
        return logits[:, 0] if squeeze else logits

    # ---- public entry points -------------------------------------------------------------

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

    def score_codes(self, enc: EncoderOutput, codes: torch.Tensor) -> torch.Tensor:
        """:meth:`sequence_log_prob` on already encoded queries."""
        logp = torch.log_softmax(self.decode_logits(enc, codes).float(), dim=-1)
        return logp.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(-1)
