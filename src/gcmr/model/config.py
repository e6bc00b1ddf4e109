"""Architecture configurations (saved in model manifests): the query encoder's shape, shared
by the generative retriever (:class:`ModelConfig`) and the dense tower
(:class:`DenseTowerConfig`, re-exported by :mod:`gcmr.model.dense`), so both describe text
capacity the same way.

Torch-free (the CLI reads the defaults for its help texts without loading torch). A field
whose values are a fixed set names them in ``metadata["choices"]``; the CLI offers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gcmr.config import JsonConfig
from gcmr.errors import ConfigError

FUSIONS = ("cart", "none")
POOLINGS = ("mean", "first")


@dataclass(kw_only=True)
class EncoderConfig(JsonConfig):
    """Shape of the query encoder (:class:`gcmr.model.layers.QueryEncoder`).

    Defaults: d_model 192 / 4 heads / FFN 768 / 3 layers, the largest size measured by
    ``benchmarks/decode_speed.py`` that meets the search speed targets on one CPU core
    (>= 200 queries/s at batch 100 / beam 10, single-query p50 <= 20 ms); d_model 256 decodes
    at ~165 queries/s and ~20.5 ms per query there. 3 encoder layers as in CART.
    """

    vocab_size: int  # query tokenizer vocabulary
    d_model: int = 192
    n_heads: int = 4
    d_ff: int = 768
    encoder_layers: int = 3
    dropout: float = 0.1
    max_query_length: int = 32  # encoder positions
    seed: int = 0  # weight initialization (a private generator: same seed -> same weights)

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ConfigError(f"vocab_size must be >= 2, got {self.vocab_size}")
        for name in self._positive_fields():
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads "
                              f"({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    def _positive_fields(self) -> tuple[str, ...]:
        return ("d_model", "n_heads", "d_ff", "encoder_layers", "max_query_length")

    def encoder_kwargs(self) -> dict:
        """The :class:`~gcmr.model.layers.QueryEncoder` arguments of this shape."""
        return {"vocab_size": self.vocab_size, "d_model": self.d_model, "n_heads": self.n_heads,
                "d_ff": self.d_ff, "num_layers": self.encoder_layers, "dropout": self.dropout,
                "max_length": self.max_query_length}


CODE_VECTORS = ("none", "add", "steer")


@dataclass
class ModelConfig(EncoderConfig):
    """Shape of the encoder-decoder retriever (CART section 3.4): the query encoder's fields
    (:class:`EncoderConfig`, keyword-only) plus the identifier decoder's. 3 + 3 layers as in
    the paper."""

    level_sizes: list[int]  # identifier vocabulary of each level (level-local codes)
    decoder_layers: int = 3
    # cart = coarse + fine fusion (eqs. 2-5) | none = cross-attend last layer
    fusion: str = field(default="cart", metadata={"choices": FUSIONS})
    tie_output_embeddings: bool = False  # share the identifier embedding with the output layer
    # query-vector head for hybrid search: pooled last encoder layer -> Linear(d, query_dim),
    # trained with InfoNCE against the item embeddings; query_dim = the corpus embedding dim D
    # (0 = no head: pure generation, the papers' CART / AVG)
    query_dim: int = 0
    query_pooling: str = "mean"  # mean | first
    # a pretrained query encoder (gcmr.model.pretrained.pretrained_spec: source, path, frozen,
    # hf_config) in place of the from-scratch one; its last encoder_layers hidden layers are
    # the decoder's memories. {} = the from-scratch encoder (CART)
    pretrained: dict = field(default_factory=dict)
    # code vectors (gcmr.train.code_vectors): every code gets an item-space vector, fitted by
    # least squares so that an item's codes sum to its embedding, and the query vector's
    # score scale * <q, e_c> is added to the code's logit, so a sequence's score includes
    # <q, x_hat>: generation ranks like the query head. none = the papers' decoder; add = on
    # top of the decoder's free output layer (vectors trained too); steer = the vectors
    # (frozen) are the only code scores, the decoder's state h moving the query vector per
    # prefix: logit = scale * <q + W h, e_c>, W zero at init (the free output rows fit the
    # training texts and hurt test queries: 5k world, pure generation R@1 0.537 vs 0.470).
    # Needs query_dim; meant for additive identifiers (gcmr index --fine-quantizer kmeans)
    code_vectors: str = field(default="none", metadata={"choices": CODE_VECTORS})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.code_vectors not in CODE_VECTORS:
            raise ConfigError(f"code_vectors must be one of {list(CODE_VECTORS)}, got "
                              f"{self.code_vectors!r}")
        if self.code_vectors != "none" and not self.query_dim:
            raise ConfigError("code_vectors needs the query-vector head (query_dim > 0, "
                              "i.e. training with --dense-weight > 0)")
        if not isinstance(self.pretrained, dict):
            raise ConfigError(f"pretrained must be an object, got {type(self.pretrained).__name__}")
        if self.pretrained:
            limit = int(self.pretrained.get("hf_config", {}).get("max_position_embeddings", 0)
                        or 0)
            if limit and self.max_query_length > limit:
                raise ConfigError(f"max_query_length {self.max_query_length} exceeds the "
                                  f"pretrained encoder's {limit} positions")
        if self.query_dim < 0:
            raise ConfigError(f"query_dim must be >= 0, got {self.query_dim}")
        if self.query_pooling not in ("mean", "first"):
            raise ConfigError(f"query_pooling must be 'mean' or 'first', got "
                              f"{self.query_pooling!r}")
        if not self.level_sizes or any(int(v) < 1 for v in self.level_sizes):
            raise ConfigError(f"level_sizes must be a non-empty list of positive sizes, "
                              f"got {self.level_sizes}")
        self.level_sizes = [int(v) for v in self.level_sizes]
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {list(FUSIONS)}, got {self.fusion!r}")

    def _positive_fields(self) -> tuple[str, ...]:
        return super()._positive_fields() + ("decoder_layers",)

    @property
    def num_levels(self) -> int:
        return len(self.level_sizes)


@dataclass
class DenseTowerConfig(EncoderConfig):
    """Shape of the query tower (saved in the dense model manifest): the query encoder's fields
    (keyword-only, :class:`EncoderConfig`'s defaults) plus the projection into the item space
    (:class:`gcmr.model.dense.DenseTower`)."""

    item_dim: int  # D of the corpus embeddings: the tower projects into that space
    pooling: str = field(default="mean", metadata={"choices": POOLINGS})  # mean | first
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
