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
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gcmr.errors import ConfigError
from gcmr.model.config import ModelConfig
from gcmr.model.decoding import IdentifierDecoder
from gcmr.model.layers import (
    ENCODER_LEGACY_KEYS,
    KV,
    DecoderLayer,
    QueryEncoder,
    QueryVectorHead,
    register_legacy_keys,
    xavier_init_,
)

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
    # a pretrained encoder's sentence vectors [B, h] (text-space rerank); None from scratch
    text: torch.Tensor | None = None
    # code vectors (ModelConfig.code_vectors): scale * <query vector, code vector> of every
    # code [B, sum(level_sizes)], added to the decoder's logits at every step
    code_bias: torch.Tensor | None = None
    # the query head's vectors [B, query_dim] when encode already computed them (for the
    # code bias): the hybrid rerank and the InfoNCE term reuse them
    query: torch.Tensor | None = None

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


class GenerativeRetrievalModel(IdentifierDecoder, nn.Module):
    """Encoder-decoder transformer of CART section 3.4, trained from scratch (Xavier-uniform).

    ``forward`` is teacher forcing (:class:`~gcmr.model.decoding.IdentifierDecoder`);
    ``encode`` + ``decode_step`` + ``level_log_probs`` are the incremental decoding used by
    :func:`gcmr.search.beam.constrained_beam_search`.
    """

    start_token = BOS
    # parameter names before the query encoder became its own module (model dirs of gcmr 0.1)
    LEGACY_KEYS: ClassVar[dict[str, str]] = {**ENCODER_LEGACY_KEYS,
                                             "memory_norms.": "query_encoder.norms."}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d, h, f, p = config.d_model, config.n_heads, config.d_ff, config.dropout
        sizes = config.level_sizes
        self.embed_scale = math.sqrt(d)
        if config.pretrained:
            from gcmr.model.pretrained import PretrainedQueryEncoder

            self.query_encoder: nn.Module = PretrainedQueryEncoder(
                config.pretrained, d_model=d, num_layers=config.encoder_layers, dropout=p)
        else:
            self.query_encoder = QueryEncoder(**config.encoder_kwargs(), norms="every")
        self.code_embedding = nn.Embedding(1 + sum(sizes), d)  # BOS + level-tagged codes
        self.level_embedding = nn.Embedding(len(sizes), d)
        self.decoder = nn.ModuleList(
            DecoderLayer(d, h, f, p, fusion=config.fusion, num_memories=config.encoder_layers)
            for _ in range(config.decoder_layers))
        self.final_norm = nn.LayerNorm(d)
        steer = config.code_vectors == "steer"
        self.output = (None if config.tie_output_embeddings or steer
                       else nn.Linear(d, sum(sizes), bias=False))
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
        # registered last, so a model without it initializes exactly as before it existed
        self.query_head = (QueryVectorHead(d, config.query_dim, pooling=config.query_pooling)
                           if config.query_dim else None)
        # item-space vector of every code (zeros until fitted: gcmr.train.code_vectors) and
        # the log of their score scale (CLIP's initial 1 / 0.07); plain parameters, so the
        # Xavier init leaves them alone
        if config.code_vectors != "none":
            self.code_vectors = nn.Parameter(torch.zeros(sum(sizes), config.query_dim),
                                             requires_grad=not steer)
            self.code_log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        else:
            self.code_vectors = None
        # code_vectors = steer: the decoder's state moves the query vector (zero at init)
        self.steer = nn.Linear(d, config.query_dim, bias=False) if steer else None
        register_legacy_keys(self, self.LEGACY_KEYS)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Xavier-uniform weights, zero biases, unit LayerNorms (and the fusion gates), from a
        private generator seeded with ``config.seed`` (:func:`xavier_init_`)."""
        xavier_init_(self, self.config.seed)
        self.output_bias.zero_()
        if self.steer is not None:
            self.steer.weight.zero_()
        if self.query_head is not None:
            self.query_head.reset_temperature()

    # ---- query vector (hybrid search) ----------------------------------------------------

    @property
    def has_query_head(self) -> bool:
        return self.query_head is not None

    def query_vectors(self, enc: EncoderOutput) -> torch.Tensor:
        """L2-normalized query vectors [B, query_dim] in the item embedding space, from the
        same encoder pass that generation reads (one encoder pass serves both)."""
        if self.query_head is None:
            raise ConfigError("this model has no query-vector head (trained without "
                              "--dense-weight); hybrid search needs one")
        if enc.query is not None:
            return enc.query
        return self.query_head(enc.layers[-1], enc.mask)

    @property
    def logit_scale(self) -> torch.Tensor:
        if self.query_head is None:
            raise ConfigError("this model has no query-vector head")
        return self.query_head.logit_scale

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
        text = None
        if self.config.pretrained:
            layers, mask, text = self.query_encoder.encode_with_text(input_ids, attention_mask)
        else:
            layers, mask = self.query_encoder(input_ids, attention_mask)
        memory = [layer.fusion.memory(layers) for layer in self.decoder]
        enc = EncoderOutput(layers, mask, memory, text)
        if self.code_vectors is not None:
            enc.query = self.query_vectors(enc)
            enc.code_bias = self.code_log_scale.exp() * enc.query @ self.code_vectors.t()
        return enc

    def text_vectors(self, enc: EncoderOutput) -> torch.Tensor:
        """The pretrained encoder's L2-normalized sentence vectors [B, h] (scored against the
        items' caption vectors by text-space hybrid search)."""
        if enc.text is None:
            raise ConfigError("this model has no pretrained query encoder; text-space rerank "
                              "(item_vectors = captions) needs one (gcmr train --query-encoder)")
        return enc.text

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
        pos = 0 if cache is None else cache.length
        x = self.code_embedding(tokens) * self.embed_scale + self.level_embedding.weight[pos]
        x = self.drop(x).unsqueeze(2)  # [B, M, 1, d]
        new_kv = []
        for i, layer in enumerate(self.decoder):
            x, kv = layer(x, enc.memory[i], enc.mask, None if cache is None else cache.kv[i])
            new_kv.append(kv)
        return self.final_norm(x.squeeze(2)), DecoderCache(new_kv)

    def decoder_hidden(self, enc: EncoderOutput, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced final hidden states [B, K, n, d] of decoder inputs [B, K, n]."""
        n = tokens.shape[-1]
        x = self.code_embedding(tokens) * self.embed_scale + self.level_embedding.weight[:n]
        x = self.drop(x)
        for i, layer in enumerate(self.decoder):
            x, _ = layer(x, enc.memory[i], enc.mask)
        return self.final_norm(x)

    def level_bias(self, enc: EncoderOutput | None, level: int) -> torch.Tensor | None:
        """The code vectors' scores [B, level_sizes[level]] of ``level``, or None."""
        if enc is None or enc.code_bias is None:
            return None
        start = self.offsets[level]
        return enc.code_bias[:, start:start + self.config.level_sizes[level]]

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """Logits [..., level_sizes[level]] of the codes of ``level``."""
        start, size = self.offsets[level], self.config.level_sizes[level]
        if self.steer is not None:  # scale * <W h, e_c>; <q, e_c> comes from level_bias
            # as h @ (scale * E_l W)^T: a [size, d] matrix per call instead of a D-wide
            # projection per beam (the same numbers, a tenth of the work at 1024-d items)
            weight = self.code_log_scale.exp() * (self.code_vectors[start:start + size]
                                                  @ self.steer.weight)
            return F.linear(hidden, weight, self.output_bias[start:start + size])
        weight = self.code_embedding.weight[1:] if self.output is None else self.output.weight
        return F.linear(hidden, weight[start:start + size], self.output_bias[start:start + size])
