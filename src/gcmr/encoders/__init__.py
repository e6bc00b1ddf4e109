"""Embedding and caption backends (all heavy dependencies are imported lazily from the
``encoders`` extra).

```
from gcmr.encoders import load_encoder, load_text_encoder
enc = load_encoder("open_clip:ViT-B-32:laion2b_s34b_b79k", modality="video", frames=8)
vecs = enc.encode_media(paths)                  # float32 [n, enc.dim], L2-normalized
text = load_text_encoder("minilm").encode_text(["a dog on a beach"])   # [1, 384]
```
See :mod:`gcmr.encoders.registry` for the spec grammar.
"""

from gcmr.encoders.base import Encoder, ImageEncoder, l2_normalize, select_device
from gcmr.encoders.captioner import (
    CaptionOptions,
    caption_items,
    load_captioner,
    read_captions_file,
)
from gcmr.encoders.embed import embed_items_job, embed_to_file
from gcmr.encoders.pipeline import caption_corpus, embed_corpus, embed_inputs
from gcmr.encoders.registry import SPEC_HELP, build_encoder, load_encoder, load_text_encoder

__all__ = [
    "SPEC_HELP",
    "CaptionOptions",
    "Encoder",
    "ImageEncoder",
    "build_encoder",
    "caption_corpus",
    "caption_items",
    "embed_corpus",
    "embed_inputs",
    "embed_items_job",
    "embed_to_file",
    "l2_normalize",
    "load_captioner",
    "load_encoder",
    "load_text_encoder",
    "read_captions_file",
    "select_device",
]
