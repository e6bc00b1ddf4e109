"""Semantic identifiers: schemes (CART coarse K-Means + RQ-VAE fine + unique token, and the
ablation baselines), the identifier index artifact and the prefix trie as tensors."""

from gcmr.ids import avg as _avg  # noqa: F401  registers the "avg" scheme
from gcmr.ids.config import IndexConfig
from gcmr.ids.index import SemanticIndex, build_index, load_index, load_index_and_corpus
from gcmr.ids.schemes import SCHEMES, IdScheme, NotFittedError, register_scheme
from gcmr.ids.stats import index_stats, unique_counter
from gcmr.ids.trie import Trie

__all__ = [
    "SCHEMES",
    "IdScheme",
    "IndexConfig",
    "NotFittedError",
    "SemanticIndex",
    "Trie",
    "build_index",
    "index_stats",
    "load_index",
    "load_index_and_corpus",
    "register_scheme",
    "unique_counter",
]
