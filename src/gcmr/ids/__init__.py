"""Semantic identifiers: schemes (CART coarse K-Means + RQ-VAE fine + unique token, and the
ablation baselines), the identifier index artifact and the prefix trie as tensors.

Names are imported on first use (PEP 562), so ``import gcmr.ids.config`` (the torch-free
:class:`IndexConfig` the CLI reads for its help texts) does not load torch. Any name but
``IndexConfig`` also imports :mod:`gcmr.ids.avg`, which registers the ``avg`` scheme.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gcmr.ids.config import IndexConfig
    from gcmr.ids.index import SemanticIndex, build_index, load_index, load_index_and_corpus
    from gcmr.ids.schemes import SCHEMES, IdScheme, NotFittedError, register_scheme
    from gcmr.ids.stats import index_stats, unique_counter
    from gcmr.ids.trie import Trie

_HOMES = {
    "IndexConfig": "gcmr.ids.config",
    "SCHEMES": "gcmr.ids.schemes",
    "IdScheme": "gcmr.ids.schemes",
    "NotFittedError": "gcmr.ids.schemes",
    "register_scheme": "gcmr.ids.schemes",
    "SemanticIndex": "gcmr.ids.index",
    "build_index": "gcmr.ids.index",
    "load_index": "gcmr.ids.index",
    "load_index_and_corpus": "gcmr.ids.index",
    "index_stats": "gcmr.ids.stats",
    "unique_counter": "gcmr.ids.stats",
    "Trie": "gcmr.ids.trie",
}

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


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _HOMES[name]
    if module != "gcmr.ids.config":
        importlib.import_module("gcmr.ids.avg")  # registers the "avg" scheme in SCHEMES
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
