"""Architecture configurations (saved in model manifests): the query encoder's shape, shared
by the generative retriever (:class:`ModelConfig`) and the dense tower
(:class:`gcmr.model.dense.DenseTowerConfig`), so both describe text capacity the same way."""

from __future__ import annotations

from dataclasses import dataclass

from gcmr.config import JsonConfig
from gcmr.errors import ConfigError

FUSIONS = ("cart", "none")


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


@dataclass
class ModelConfig(EncoderConfig):
    """Shape of the encoder-decoder retriever (CART section 3.4): the query encoder's fields
    (:class:`EncoderConfig`, keyword-only) plus the identifier decoder's. 3 + 3 layers as in
    the paper."""

    level_sizes: list[int]  # identifier vocabulary of each level (level-local codes)
    decoder_layers: int = 3
    fusion: str = "cart"  # cart = coarse + fine fusion (eqs. 2-5) | none = cross-attend last layer
    tie_output_embeddings: bool = False  # share the identifier embedding with the output layer

    def __post_init__(self) -> None:
        super().__post_init__()
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
