"""The models: query tokenizer, transformer blocks and the shared query encoder, the CART
fusion decoder, the dense query tower, and the model-directory formats (:mod:`gcmr.model.io`).

Names are imported on first use (PEP 562), so ``import gcmr.model.config`` (the torch-free
configs the CLI reads for its help texts) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gcmr.extras import lazy_exports

if TYPE_CHECKING:
    from gcmr.model.config import EncoderConfig, ModelConfig
    from gcmr.model.dense import DenseTower, DenseTowerConfig
    from gcmr.model.generative import DecoderCache, EncoderOutput, GenerativeRetrievalModel
    from gcmr.model.tokenizer import QueryTokenizer

_HOMES = {
    "DecoderCache": "gcmr.model.generative",
    "DenseTower": "gcmr.model.dense",
    "DenseTowerConfig": "gcmr.model.config",
    "EncoderConfig": "gcmr.model.config",
    "EncoderOutput": "gcmr.model.generative",
    "GenerativeRetrievalModel": "gcmr.model.generative",
    "ModelConfig": "gcmr.model.config",
    "QueryTokenizer": "gcmr.model.tokenizer",
}

__all__ = ["DecoderCache", "DenseTower", "DenseTowerConfig", "EncoderConfig", "EncoderOutput",
           "GenerativeRetrievalModel", "ModelConfig", "QueryTokenizer"]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
