"""Optional pretrained backbone: a ``transformers`` T5 whose vocabulary is extended by the
identifier tokens (AVG table 6: initializing token-to-voken generation from T5).

``T5Backbone`` exposes the interface the rest of gcmr uses on
:class:`~gcmr.model.GenerativeRetrievalModel`: teacher forcing (``forward``,
``decode_logits``, ``sequence_log_prob``, ``score_codes``: shared code in
:class:`~gcmr.model.decoding.IdentifierDecoder`, on top of this module's ``decoder_hidden``),
the incremental decoding that :func:`gcmr.search.beam.constrained_beam_search` drives
(``encode``, ``decode_step``, ``level_log_probs``, ``token_ids``), and ``level_sizes`` /
``num_levels``. So the beam search, CART's losses and :func:`gcmr.train.avg.avg_loss` run on
it unchanged.

Vocabulary. Code ``c`` of level ``l`` is a new token (voken ``<v{l}_{c}>``) with id
``base_vocab + offsets[l] + c`` (level-tagged, as in our own model; identifiers never pass
through the text tokenizer, so only the embedding rows are added); the embedding matrix is
resized once and the new rows start from a seeded normal with the std of the pretrained rows.
Step ``l``'s logits are T5's LM head restricted to level ``l``'s rows, so only that level's
codes get probability (T5's own text vocabulary never competes).

Decoding. HF T5 cross-attends through per-sequence encoder states, so each of the ``M`` beams
of a query reads its query's encoder output expanded to ``[B*M, T, d]``, and ``decode_step`` is
a simple non-cached step: the "cache" is the decoded prefix, and each step re-runs T5's decoder
on it (identifiers are ~5 tokens, so the quadratic cost is small, and this avoids depending on
the cache classes that change between ``transformers`` versions). Our own model keeps a real KV
cache and shares the encoder K/V between beams; this path trades that speed for pretrained
weights.

Weights are loaded with ``from_pretrained(source, local_files_only=True)`` when ``source`` is a
local directory (nothing is downloaded) and from the hub cache / hub otherwise. The query
tokenizer is the checkpoint's own ``tokenizer.json`` (:class:`T5QueryTokenizer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gcmr.config import JsonConfig
from gcmr.errors import ArtifactError, ConfigError, GcmrError
from gcmr.extras import require
from gcmr.model.decoding import IdentifierDecoder
from gcmr.model.tokenizer import PretrainedQueryTokenizer, is_local


@dataclass
class T5BackboneConfig(JsonConfig):
    """What rebuilds a :class:`T5Backbone` without the original checkpoint (saved in the model
    manifest): the architecture (``t5_config``, vocabulary already extended), the identifier
    levels and the size of T5's own vocabulary before the voken tokens."""

    source: str  # local directory or hub name the pretrained weights came from
    level_sizes: list[int]
    base_vocab_size: int  # rows of T5's embedding matrix before the identifier tokens
    t5_config: dict = field(default_factory=dict)  # transformers T5Config.to_dict()
    max_query_length: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.level_sizes or any(int(v) < 1 for v in self.level_sizes):
            raise ConfigError(f"level_sizes must be a non-empty list of positive sizes, "
                              f"got {self.level_sizes}")
        self.level_sizes = [int(v) for v in self.level_sizes]
        if self.base_vocab_size < 1:
            raise ConfigError(f"base_vocab_size must be >= 1, got {self.base_vocab_size}")

    @property
    def num_levels(self) -> int:
        return len(self.level_sizes)


@dataclass
class T5EncoderOutput:
    """T5's encoder states [B, T, d] and the bool attention mask [B, T] of a query batch."""

    hidden: torch.Tensor
    mask: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.hidden.shape[0]


@dataclass
class PrefixCache:
    """The decoded prefix [B*M, n] (start token first) of every sequence: T5 re-reads it."""

    tokens: torch.Tensor

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    def reorder(self, index: torch.Tensor) -> PrefixCache:
        return PrefixCache(self.tokens.index_select(0, index))


class T5Backbone(IdentifierDecoder, nn.Module):
    """``T5ForConditionalGeneration`` with identifier tokens, behind the retriever interface."""

    def __init__(self, t5: nn.Module, config: T5BackboneConfig) -> None:
        super().__init__()
        self.t5 = t5
        self.config = config
        offsets = [0]
        for size in config.level_sizes[:-1]:
            offsets.append(offsets[-1] + size)
        self.offsets = offsets
        rows = t5.get_input_embeddings().num_embeddings
        if rows != config.base_vocab_size + sum(config.level_sizes):
            raise ConfigError(f"T5 embedding has {rows} rows, expected {config.base_vocab_size} "
                              f"+ {sum(config.level_sizes)} identifier tokens")
        self.register_buffer("code_offsets", torch.tensor(offsets, dtype=torch.int64)
                             + config.base_vocab_size, persistent=False)
        self.register_buffer("level_size_tensor", torch.tensor(config.level_sizes),
                             persistent=False)
        t5_cfg = t5.config
        # original T5 scales decoder outputs by d**-0.5 before the (tied) LM head; v1.1 does not
        self.output_scale = (t5_cfg.d_model ** -0.5) if getattr(
            t5_cfg, "scale_decoder_outputs", getattr(t5_cfg, "tie_word_embeddings", True)) else 1.0
        self.start_token = int(t5_cfg.decoder_start_token_id
                               if t5_cfg.decoder_start_token_id is not None
                               else t5_cfg.pad_token_id)

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, source: str | Path, level_sizes: list[int], *,
                        max_query_length: int = 32, seed: int = 0,
                        local_files_only: bool | None = None) -> T5Backbone:
        """Load pretrained T5 weights from a local directory (never downloads) or a hub name,
        and add one token per identifier code of every level."""
        transformers = require("transformers", "encoders", purpose="the T5 backbone")
        source = str(source)
        local = is_local(source)
        if not local and source.startswith((".", "/", "~")):
            raise GcmrError(f"{source}: T5 model directory not found")
        path = str(Path(source).expanduser()) if local else source
        try:
            t5 = transformers.T5ForConditionalGeneration.from_pretrained(
                path, local_files_only=local if local_files_only is None else local_files_only)
        except (OSError, ValueError) as exc:
            raise GcmrError(f"cannot load T5 weights from {source!r}: {exc}") from exc
        base = t5.get_input_embeddings().num_embeddings
        config = T5BackboneConfig(source=source, level_sizes=list(level_sizes),
                                  base_vocab_size=base, max_query_length=max_query_length,
                                  seed=seed)
        _add_identifier_tokens(t5, sum(config.level_sizes), seed=seed)
        config.t5_config = t5.config.to_dict()
        return cls(t5, config)

    @classmethod
    def from_config(cls, config: T5BackboneConfig) -> T5Backbone:
        """The architecture only (random weights): load a trained state dict into it."""
        transformers = require("transformers", "encoders", purpose="the T5 backbone")
        if not config.t5_config:
            raise ArtifactError("T5 backbone config has no t5_config; was it saved by gcmr?")
        t5_config = transformers.T5Config.from_dict(dict(config.t5_config))
        return cls(transformers.T5ForConditionalGeneration(t5_config), config)

    # ---- state dict: T5 ties its embedding, encoder/decoder inputs and LM head -------------

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Like ``nn.Module.state_dict`` but each tied tensor once (safetensors refuses
        aliases); :meth:`load_state_dict` restores the aliases."""
        state = super().state_dict(*args, **kwargs)
        seen: dict[tuple[int, tuple[int, ...]], str] = {}
        for key in list(state):
            value = state[key]
            if not isinstance(value, torch.Tensor):
                continue
            ident = (value.untyped_storage().data_ptr() + value.storage_offset(),
                     tuple(value.shape))
            if ident in seen:
                del state[key]
            else:
                seen[ident] = key
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        state = dict(state_dict)
        for alias, source in self._aliases().items():
            if alias not in state and source in state:
                state[alias] = state[source]
        return super().load_state_dict(state, strict=strict, assign=assign)

    def _aliases(self) -> dict[str, str]:
        """Tied parameter name -> the name :meth:`state_dict` keeps."""
        first: dict[int, str] = {}
        out = {}
        for name, param in self.named_parameters(remove_duplicate=False):
            key = id(param)
            if key in first:
                out[name] = first[key]
            else:
                first[key] = name
        return out

    # ---- retriever interface ------------------------------------------------------------

    def voken_embedding_weight(self) -> torch.Tensor:
        """The embedding matrix the identifier tokens are read from (rows :meth:`token_ids`)."""
        return self.t5.get_input_embeddings().weight

    def token_ids(self, level: int | torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """T5 vocabulary ids of level-local ``codes`` at ``level``."""
        return codes + self.code_offsets[level]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> T5EncoderOutput:
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ConfigError(f"input_ids and attention_mask must both be [B, T], got "
                              f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
        mask = attention_mask.to(torch.long)
        hidden = self.t5.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return T5EncoderOutput(hidden, attention_mask.to(torch.bool))

    def decoder_hidden(self, enc: T5EncoderOutput, tokens: torch.Tensor) -> torch.Tensor:
        """T5 decoder on ``tokens`` [B, K, n] (K sequences per query) -> hidden [B, K, n, d]."""
        b, k, n = tokens.shape
        hidden = enc.hidden.unsqueeze(1).expand(b, k, *enc.hidden.shape[1:]).reshape(
            b * k, *enc.hidden.shape[1:])
        mask = enc.mask.unsqueeze(1).expand(b, k, -1).reshape(b * k, -1).to(torch.long)
        out = self.t5.decoder(input_ids=tokens.reshape(b * k, n), encoder_hidden_states=hidden,
                              encoder_attention_mask=mask, use_cache=False).last_hidden_state
        return (out * self.output_scale).view(b, k, n, -1)

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """Logits [..., level_sizes[level]]: T5's LM head on level ``level``'s token rows."""
        start = self.config.base_vocab_size + self.offsets[level]
        weight = self.t5.get_output_embeddings().weight[start:start + self.level_sizes[level]]
        return F.linear(hidden, weight)

    def decode_step(self, enc: T5EncoderOutput, tokens: torch.Tensor,
                    cache: PrefixCache | None) -> tuple[torch.Tensor, PrefixCache]:
        """One decoding step for ``M`` sequences per query (``tokens`` [B, M] = the newest
        token; at the first step the start token is used whatever ``tokens`` holds). Re-runs
        the decoder on the whole prefix (see the module docstring)."""
        b, m = tokens.shape
        if cache is None:
            prefix = torch.full((b * m, 1), self.start_token, dtype=torch.int64, device=tokens.device)
        else:
            prefix = torch.cat([cache.tokens, tokens.reshape(b * m, 1)], dim=1)
        hidden = self.decoder_hidden(enc, prefix.view(b, m, -1))[:, :, -1]
        return hidden, PrefixCache(prefix)


@torch.no_grad()
def _add_identifier_tokens(t5: nn.Module, count: int, *, seed: int) -> None:
    """Resize T5's (tied) embedding by ``count`` rows, initialized from a private seeded normal
    with the std of the pretrained rows (``resize_token_embeddings`` alone would draw them from
    the global RNG)."""
    old = t5.get_input_embeddings().weight
    base = old.shape[0]
    std = float(old.float().std())
    t5.resize_token_embeddings(base + count, mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    new = torch.randn(count, old.shape[1], generator=gen) * std
    emb = t5.get_input_embeddings().weight
    emb[base:] = new.to(emb.dtype)
    out = t5.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != emb.data_ptr():
        out.weight[base:] = new.to(out.weight.dtype)


class T5QueryTokenizer(PretrainedQueryTokenizer):
    """A T5 checkpoint's own ``tokenizer.json`` (pad token ``<pad>``)."""

    pad_tokens = ("<pad>",)
    what = "T5"
