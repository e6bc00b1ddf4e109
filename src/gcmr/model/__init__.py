"""The retriever model: query tokenizer, transformer blocks, CART fusion decoder."""

from gcmr.model.config import ModelConfig
from gcmr.model.generative import DecoderCache, EncoderOutput, GenerativeRetrievalModel
from gcmr.model.tokenizer import QueryTokenizer

__all__ = ["DecoderCache", "EncoderOutput", "GenerativeRetrievalModel", "ModelConfig",
           "QueryTokenizer"]
