"""The retriever's architecture configuration (saved in the model manifest)."""

from __future__ import annotations

from dataclasses import dataclass

from gcmr.config import JsonConfig
from gcmr.errors import ConfigError

FUSIONS = ("cart", "none")


@dataclass
class ModelConfig(JsonConfig):
    """Shape of the encoder-decoder retriever (CART section 3.4).

    Defaults: 3 + 3 layers as in the paper; d_model 192 / 4 heads / FFN 768, the largest size
    measured by ``benchmarks/decode_speed.py`` that meets the search speed targets on one CPU
    core (>= 200 queries/s at batch 100 / beam 10, single-query p50 <= 20 ms); d_model 256
    decodes at ~165 queries/s and ~20.5 ms per query there.
    """

    vocab_size: int  # query tokenizer vocabulary
    level_sizes: list[int]  # identifier vocabulary of each level (level-local codes)
    d_model: int = 192
    n_heads: int = 4
    d_ff: int = 768
    encoder_layers: int = 3
    decoder_layers: int = 3
    dropout: float = 0.1
    fusion: str = "cart"  # cart = coarse + fine fusion (eqs. 2-5) | none = cross-attend last layer
    max_query_length: int = 32  # encoder positions
    tie_output_embeddings: bool = False  # share the identifier embedding with the output layer
    seed: int = 0  # weight initialization (a private generator: same seed -> same weights)

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ConfigError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if not self.level_sizes or any(int(v) < 1 for v in self.level_sizes):
            raise ConfigError(f"level_sizes must be a non-empty list of positive sizes, "
                              f"got {self.level_sizes}")
        self.level_sizes = [int(v) for v in self.level_sizes]
        for name in ("d_model", "n_heads", "d_ff", "encoder_layers", "decoder_layers",
                     "max_query_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads "
                              f"({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {list(FUSIONS)}, got {self.fusion!r}")

    @property
    def num_levels(self) -> int:
        return len(self.level_sizes)
