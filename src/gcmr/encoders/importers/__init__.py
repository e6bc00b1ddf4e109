"""Dataset importers: the six benchmark datasets of the papers (Flickr30K, MS-COCO, Clotho,
AudioCaps, MSR-VTT, MSVD) and a generic (file, caption) folder, each read from its standard
annotation files into corpus format v1 (see :mod:`gcmr.encoders.importers.base` for the mapping).

```
from gcmr.encoders.importers import import_dataset
summary = import_dataset("flickr30k", root="data/flickr30k", out="corpora/flickr30k",
                         encoder="open_clip:ViT-B-32:laion2b_s34b_b79k")
```
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gcmr.encoders.importers.audio import read_audiocaps, read_clotho
from gcmr.encoders.importers.base import DatasetRecords, MediaRecord
from gcmr.encoders.importers.build import build_corpus
from gcmr.encoders.importers.generic import read_generic
from gcmr.encoders.importers.karpathy import read_coco, read_flickr30k
from gcmr.encoders.importers.video import read_msrvtt, read_msvd
from gcmr.errors import ConfigError

READERS: dict[str, Callable[..., DatasetRecords]] = {
    "flickr30k": read_flickr30k,
    "coco": read_coco,
    "clotho": read_clotho,
    "audiocaps": read_audiocaps,
    "msrvtt": read_msrvtt,
    "msvd": read_msvd,
    "generic": read_generic,
}
DATASETS = tuple(READERS)
# the offline default encoder per modality (None: the user must choose one)
DEFAULT_ENCODER = {"image": "efficientnet-lite0", "video": "efficientnet-lite0", "audio": None}


def read_dataset(dataset: str, root: str | Path, **options: Any) -> DatasetRecords:
    """Read a dataset's annotations (no media is decoded). Options: ``annotations`` (a file or
    folder overriding the default location), ``split`` (msrvtt: 1k-A | 7k), ``modality`` and
    ``name`` (generic)."""
    if dataset not in READERS:
        raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    allowed = {"annotations"} | ({"split"} if dataset == "msrvtt" else set()) | \
        ({"modality", "name"} if dataset == "generic" else set())
    extra = sorted(k for k, v in options.items() if v is not None and k not in allowed)
    if extra:
        raise ConfigError(f"option(s) {extra} do not apply to {dataset}")
    return READERS[dataset](root, **{k: v for k, v in options.items() if v is not None})


def import_dataset(
    dataset: str,
    root: str | Path,
    out: str | Path,
    *,
    encoder: Any = None,
    captioner: Any = None,
    caption_options: Any = None,
    captions_file: str | Path | None = None,
    text_encoder: Any = None,
    caption_embeddings: bool = False,
    limit: int | None = None,
    frames: int = 8,
    device: str | None = None,
    precision: str = "auto",
    batch_size: int | None = None,
    overwrite: bool = False,
    restart: bool = False,
    show_progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Read ``dataset`` (flickr30k, coco, clotho, audiocaps, msrvtt, msvd, generic) under
    ``root`` and write a corpus to ``out``.

    ``encoder`` / ``text_encoder``: a spec string (see ``gcmr embed --help``) or an encoder;
    default ``efficientnet-lite0`` for image and video. ``captioner``: a spec string or a
    captioner (``caption_options``: a :class:`~gcmr.encoders.CaptionOptions`). ``limit``: keep
    the first N items of each split (quick trials).
    """
    from gcmr.encoders.base import ImageEncoder
    from gcmr.encoders.captioner import load_captioner
    from gcmr.encoders.registry import load_encoder, load_text_encoder
    from gcmr.encoders.video import FramePoolEncoder

    data = read_dataset(dataset, root, **options).limited(limit)
    data.check()
    out = Path(out)
    if out.exists() and not overwrite:
        from gcmr.errors import ArtifactError

        raise ArtifactError(f"{out} already exists (use --overwrite to replace it)")
    if encoder is None:
        encoder = DEFAULT_ENCODER[data.modality]
        if encoder is None:
            raise ConfigError(f"{dataset} is {data.modality}: pass --encoder (hf-clap:DIR or "
                              f"imagebind:CKPT); there is no offline default audio encoder")
    torch_opts = {"device": device, "precision": precision, "batch_size": batch_size}
    if isinstance(encoder, str):
        encoder = load_encoder(encoder, modality=data.modality, frames=frames, **torch_opts)
    elif data.modality == "video" and isinstance(encoder, ImageEncoder):
        encoder = FramePoolEncoder(encoder, frames=frames)
    if isinstance(text_encoder, str):
        text_encoder = load_text_encoder(text_encoder, **torch_opts)
    if isinstance(captioner, str):
        captioner = load_captioner(captioner, options=caption_options, device=device,
                                   precision=precision,
                                   **({"batch_size": batch_size} if batch_size else {}))
    return build_corpus(data, out, encoder=encoder, captioner=captioner,
                        captions_file=captions_file, text_encoder=text_encoder,
                        caption_embeddings=caption_embeddings, overwrite=overwrite,
                        restart=restart, show_progress=show_progress)


__all__ = [
    "DATASETS",
    "DatasetRecords",
    "MediaRecord",
    "build_corpus",
    "import_dataset",
    "read_audiocaps",
    "read_clotho",
    "read_coco",
    "read_dataset",
    "read_flickr30k",
    "read_generic",
    "read_msrvtt",
    "read_msvd",
]
