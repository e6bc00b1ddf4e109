"""The models: query tokenizer, transformer blocks and the shared query encoder, the CART
fusion decoder, the dense query tower, and the model-directory formats (:mod:`gcmr.model.io`)."""

from gcmr.model.config import EncoderConfig, ModelConfig
from gcmr.model.dense import DenseTower, DenseTowerConfig
from gcmr.model.generative import DecoderCache, EncoderOutput, GenerativeRetrievalModel
from gcmr.model.tokenizer import QueryTokenizer

__all__ = ["DecoderCache", "DenseTower", "DenseTowerConfig", "EncoderConfig", "EncoderOutput",
           "GenerativeRetrievalModel", "ModelConfig", "QueryTokenizer"]
