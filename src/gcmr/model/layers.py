"""Transformer blocks of the retriever: attention with precomputable memory K/V, the CART fusion
block (coarse + fine fusion, CART section 3.4, eqs. 2-5), encoder and decoder layers, and the
query encoder that the generative retriever and the dense tower share.

Shapes: ``B`` queries, ``T`` query tokens, ``M`` identifier sequences per query (beams or
candidates), ``n`` decoder positions in this call, ``S`` encoder layers, ``H`` heads.

The decoder keeps its state as ``[B, M, n, d]``. Self-attention runs per sequence
(``[B*M, H, n, dh]``, with a KV cache during decoding). Cross-attention folds the ``M``
sequences of a query into its query axis (``[B, H, M*n, dh]``): each query position attends to
the memory independently, so all beams of a query share the memory's K/V without copying it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gcmr.model.config import POOLINGS

KV = tuple[torch.Tensor, torch.Tensor]


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[..., n, d] -> [..., H, n, dh]."""
    *lead, n, d = x.shape
    return x.view(*lead, n, n_heads, d // n_heads).transpose(-2, -3)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[..., H, n, dh] -> [..., n, d]."""
    *lead, h, n, dh = x.shape
    return x.transpose(-2, -3).reshape(*lead, n, h * dh)


class SelfAttention(nn.Module):
    """Multi-head self-attention; returns the layer's K/V so decoding can cache them."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None,
                causal: bool = False, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        """``x`` [N, n, d]; ``mask`` bool [N, 1, 1, n] (True = attend); ``past`` cached K/V
        [N, H, t, dh] of earlier positions (then ``x`` holds the next position only)."""
        q, k, v = _heads(self.qkv(x), self.n_heads).chunk(3, dim=-1)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and past is None and x.shape[1] > 1,
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(_merge(y)), (k, v)


class CrossAttention(nn.Module):
    """Multi-head attention to an encoder memory whose K/V are computed once per query
    (:meth:`memory`) and reused by every decoding step and every beam."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def memory(self, mem: torch.Tensor) -> KV:
        """``mem`` [..., T, d] -> K, V [..., H, T, dh]."""
        k, v = _heads(self.kv(mem), self.n_heads).chunk(2, dim=-1)
        return k.contiguous(), v.contiguous()

    def forward(self, y: torch.Tensor, kv: KV, mask: torch.Tensor) -> torch.Tensor:
        """``y`` [B, Q, d] attends to K/V [B, H, T, dh], or to a stack of ``S`` memories
        [S, B, H, T, dh] (then the result is [S, B, Q, d]); ``mask`` bool [B, 1, 1, T]."""
        k, v = kv
        q = _heads(self.q(y), self.n_heads)  # [B, H, Q, dh]
        stack = k.shape[:2] if k.dim() == 5 else None
        if stack:  # S memories: one attention call over the batch S*B
            q = q.expand(stack[0], *q.shape).flatten(0, 1)
            mask = mask.expand(stack[0], *mask.shape).flatten(0, 1)
            k, v = k.flatten(0, 1), v.flatten(0, 1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        if stack:
            out = out.view(*stack, *out.shape[1:])
        return self.out(_merge(out))


class CartFusion(nn.Module):
    """CART's fusion block (section 3.4, eqs. 2-5) over all ``S`` encoder layer outputs.

    - coarse: ``Z = W [E_1; ...; E_S] + b`` (layers concatenated on the feature axis),
      ``G = sigmoid(C(Y, Z)) / S``;
    - fine (meshed-memory style): ``alpha_i = sigmoid(W_i [Y; C(Y, E_i)] + b_i)``,
      ``L = sum_i alpha_i * C(Y, E_i)``;
    - output ``G + L``.

    The fine cross-attention ``C(Y, E_i)`` shares its weights across encoder layers, as in the
    meshed-memory transformer; the coarse one has its own (Z lives in a projected space and its
    output passes through a sigmoid).
    """

    def __init__(self, d_model: int, n_heads: int, num_memories: int, dropout: float) -> None:
        super().__init__()
        self.num_memories = num_memories
        self.coarse_proj = nn.Linear(num_memories * d_model, d_model)
        self.coarse_attn = CrossAttention(d_model, n_heads, dropout)
        self.fine_attn = CrossAttention(d_model, n_heads, dropout)
        # the gates' W_i [d, 2d] split by input: W_i^y (all S stacked in one Linear, which also
        # holds b_i) acts on Y, W_i^c [S, d, d] on C(Y, E_i); see init_gates
        self.gate_y = nn.Linear(d_model, num_memories * d_model)
        self.gate_c = nn.Parameter(torch.empty(num_memories, d_model, d_model))

    @torch.no_grad()
    def init_gates(self, generator: torch.Generator) -> None:
        """Xavier-uniform init of each gate's full W_i [d, 2d] (fan_in 2d), zero bias."""
        s, d = self.gate_c.shape[:2]
        w = torch.empty(s, d, 2 * d)
        for i in range(s):
            nn.init.xavier_uniform_(w[i], generator=generator)
        self.gate_y.weight.copy_(w[..., :d].reshape(s * d, d))
        self.gate_c.copy_(w[..., d:])
        self.gate_y.bias.zero_()

    def memory(self, layers: list[torch.Tensor]) -> tuple[KV, KV]:
        """K/V of the coarse memory Z and of each encoder layer, once per query."""
        z = self.coarse_proj(torch.cat(layers, dim=-1))  # Z = W[E_1..E_S] + b
        fine = self.fine_attn.memory(torch.stack(layers))  # [S, B, H, T, dh]
        return self.coarse_attn.memory(z), fine

    def forward(self, y: torch.Tensor, memory: tuple[KV, KV], mask: torch.Tensor) -> torch.Tensor:
        coarse_kv, fine_kv = memory
        s = self.num_memories
        coarse = torch.sigmoid(self.coarse_attn(y, coarse_kv, mask)) / s  # G
        fine = self.fine_attn(y, fine_kv, mask)  # C(Y, E_i): [S, B, Q, d]
        alpha = torch.sigmoid(self.gates(y, fine))  # alpha_i
        return coarse + (alpha * fine).sum(dim=0)  # G + L

    def gates(self, y: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """Gate pre-activations ``W_i [Y; C_i] + b_i`` for all i: [S, B, Q, d]."""
        s, b, q, d = fine.shape
        gate_y = self.gate_y(y).view(b * q, s, d).transpose(0, 1)  # W_i^y Y + b_i
        # + W_i^c C_i for all i in one batched matmul over S (no per-query weight copies)
        return torch.baddbmm(gate_y, fine.view(s, b * q, d),
                             self.gate_c.transpose(1, 2)).view(s, b, q, d)


class LastLayerCross(nn.Module):
    """``fusion = none``: ordinary cross-attention to the last encoder layer (the ablation)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = CrossAttention(d_model, n_heads, dropout)

    def memory(self, layers: list[torch.Tensor]) -> KV:
        return self.attn.memory(layers[-1])

    def forward(self, y: torch.Tensor, memory: KV, mask: torch.Tensor) -> torch.Tensor:
        return self.attn(y, memory, mask)


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(d_ff, d_model))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask=mask)[0])
        return x + self.drop(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer: causal self-attention, then the fusion block, then the FFN."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, *, fusion: str,
                 num_memories: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = SelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.fusion: CartFusion | LastLayerCross = (
            CartFusion(d_model, n_heads, num_memories, dropout) if fusion == "cart"
            else LastLayerCross(d_model, n_heads, dropout))
        self.norm3 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory, mask: torch.Tensor,
                past: KV | None = None) -> tuple[torch.Tensor, KV]:
        """``x`` [B, M, n, d] -> same shape, plus this layer's self-attention K/V
        [B*M, H, t, dh] (``past`` extended by the new positions)."""
        b, m, n, d = x.shape
        a, present = self.self_attn(self.norm1(x).reshape(b * m, n, d), causal=True, past=past)
        x = x + self.drop(a.view(b, m, n, d))
        fused = self.fusion(self.norm2(x).reshape(b, m * n, d), memory, mask)
        x = x + self.drop(fused.view(b, m, n, d))
        return x + self.drop(self.ffn(self.norm3(x))), present


class QueryEncoder(nn.Module):
    """The text encoder of every gcmr model: token embedding scaled by sqrt(d) plus learned
    positions, dropout, then ``num_layers`` pre-norm :class:`EncoderLayer` s.

    ``norms = "every"`` layer-normalizes every layer's output and returns all of them (the
    memories of CART's fusion decoder, section 3.4); ``norms = "last"`` returns only the final
    layer, normalized (what a pooled dense tower reads). Parameters are initialized by the
    owning model (``reset_parameters`` there draws from one seeded generator in module order).
    """

    def __init__(self, *, vocab_size: int, d_model: int, n_heads: int, d_ff: int,
                 num_layers: int, dropout: float, max_length: int, norms: str = "every") -> None:
        super().__init__()
        if norms not in ("every", "last"):
            raise ValueError(f"norms must be 'every' or 'last', got {norms!r}")
        self.embed_scale = math.sqrt(d_model)
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_length, d_model)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout)
                                    for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model)
                                   for _ in range(num_layers if norms == "every" else 1))
        self.every = norms == "every"
        self.drop = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``input_ids`` / ``attention_mask`` [B, T] -> (normalized layer outputs, each
        [B, T, d]; the bool key mask [B, 1, 1, T], True at real tokens)."""
        t = input_ids.shape[1]
        x = self.token_embedding(input_ids) * self.embed_scale
        x = self.drop(x + self.position_embedding.weight[:t])
        mask = attention_mask.to(torch.bool)[:, None, None, :]
        outputs = []
        for i, layer in enumerate(self.layers):
            x = layer(x, mask)
            if self.every:
                outputs.append(self.norms[i](x))
        if not self.every:
            outputs.append(self.norms[0](x))
        return outputs, mask


class QueryVectorHead(nn.Module):
    """A query vector in the item embedding space from the query encoder's last layer: pooled
    (mean over real tokens, or the first token), projected by ``Linear(d, item_dim)`` and
    L2-normalized, with a learnable InfoNCE temperature (CLIP: ``exp(log_scale)`` clamped at
    100). The dense tower is a :class:`QueryEncoder` plus this head; the generative model
    carries one too (its query-vector head, used to rerank beam-search candidates)."""

    max_logit_scale = 100.0

    def __init__(self, d_model: int, item_dim: int, *, pooling: str = "mean",
                 temperature: float = 0.07, learn_temperature: bool = True) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        self.temperature = temperature
        self.projection = nn.Linear(d_model, item_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)),
                                      requires_grad=learn_temperature)

    @torch.no_grad()
    def reset_temperature(self) -> None:
        self.log_scale.fill_(math.log(1.0 / self.temperature))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` [B, T, d] (normalized last encoder layer), ``mask`` bool [B, 1, 1, T] or
        [B, T] -> L2-normalized float32 [B, item_dim]."""
        keep = mask.reshape(mask.shape[0], -1)
        if self.pooling == "first":
            pooled = x[:, 0]
        else:
            w = keep.unsqueeze(-1).to(x.dtype)
            pooled = (x * w).sum(1) / w.sum(1).clamp(min=1.0)
        return F.normalize(self.projection(pooled).float(), dim=-1)


# parameter names of the query encoder before it became its own module (gcmr 0.1 model dirs)
ENCODER_LEGACY_KEYS = {"token_embedding.": "query_encoder.token_embedding.",
                       "position_embedding.": "query_encoder.position_embedding.",
                       "encoder.": "query_encoder.layers."}


@torch.no_grad()
def xavier_init_(model: nn.Module, seed: int) -> None:
    """Xavier-uniform weights, zero biases and unit LayerNorms for every module of ``model``,
    drawn in module order from a private generator seeded with ``seed`` (the same seed gives
    the same weights whatever the global RNG). Pretrained sub-modules (marked
    ``gcmr_pretrained``) are skipped. A module with an ``init_gates(generator)``
    method (:class:`CartFusion`) initializes its own extra weights from the same stream."""
    gen = torch.Generator().manual_seed(seed)
    skip = [name + "." for name, module in model.named_modules()
            if getattr(module, "gcmr_pretrained", False)]  # pretrained weights stay as loaded
    for name, module in model.named_modules():
        if getattr(module, "gcmr_pretrained", False) or any(name.startswith(p) for p in skip):
            continue
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.xavier_uniform_(module.weight, generator=gen)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.reset_parameters()
        elif hasattr(module, "init_gates"):
            module.init_gates(gen)


def register_legacy_keys(module: nn.Module, renames: dict[str, str]) -> None:
    """Let ``module.load_state_dict`` accept state dicts written with older parameter names
    (``renames``: old key prefix -> new key prefix, see :func:`rename_legacy_keys`)."""
    module._register_load_state_dict_pre_hook(
        lambda state_dict, prefix, *args: rename_legacy_keys(state_dict, prefix, renames))


def rename_legacy_keys(state_dict: dict, prefix: str, renames: dict[str, str]) -> None:
    """Rename, in place, the keys of a state dict written before a module was moved: each
    ``prefix + old`` key prefix becomes ``prefix + new`` (a ``load_state_dict`` pre-hook, so
    model directories written by earlier versions still load)."""
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        for old, new in renames.items():
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                break
