"""gcmr: generative cross-modal retrieval.

Text queries retrieve images, audio clips or videos by *generating* the item's identifier
with a small sequence-to-sequence model (CART, AVG) instead of scoring every item.
"""

__version__ = "0.1.0"

from gcmr.errors import GcmrError  # noqa: E402

__all__ = ["GcmrError", "__version__"]
