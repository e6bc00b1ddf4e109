"""The encoder protocol and the pieces every backend shares: device and precision selection,
batching, L2 normalization, parallel media loading.

An encoder turns media files (images, audio clips, videos) and/or texts into fixed-size vectors:

```
enc = load_encoder("efficientnet-lite0")
enc.encode_media(["a.jpg", "b.jpg"])   # -> float32 [2, enc.dim], rows L2-normalized
enc.encode_text(["a dog"])             # only when enc.has_text (CLIP, CLAP, ImageBind, MiniLM, ...)
```

Outputs are L2-normalized float32: CART only uses item embeddings to shape identifiers
(k-means / RQ-VAE on the unit sphere, as with the ImageBind embeddings in the paper), and AVG
compares text and item vectors by cosine; normalizing once at the boundary keeps every backend
interchangeable. (The precomputed backend returns the user's vectors unchanged.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from gcmr.errors import ConfigError, GcmrError

MEDIA_MODALITIES = ("image", "audio", "video")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
T = TypeVar("T")


def l2_normalize(x: np.ndarray, *, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalization in float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


def select_device(device: str | None = None) -> Any:
    """``auto``/None picks cuda, then mps, then cpu; an explicit device must be available.
    Under torchrun ``auto`` and ``cuda`` are this rank's GPU (``cuda:LOCAL_RANK``)."""
    import torch

    from gcmr.runtime import local_cuda

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return local_cuda()
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--device: {device!r} is not a torch device ({exc})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is None:
        return local_cuda()
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"--device {device}: Apple MPS is not available on this machine")
    return dev


def select_dtype(precision: str, device: Any) -> Any:
    """Compute dtype: ``auto`` = fp16 on CUDA (half the memory, ~2x throughput on tensor cores,
    and retrieval embeddings are insensitive to it), fp32 elsewhere (CPU fp16 is slow)."""
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision fp16 needs a GPU (cuda or mps); use fp32 or bf16 on CPU")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


@contextlib.contextmanager
def inference(device: Any, dtype: Any) -> Iterator[None]:
    """``torch.inference_mode`` plus autocast to ``dtype`` when it is not fp32.

    Autocast (rather than ``model.half()``) keeps numerically sensitive ops (softmax, layer norm)
    in fp32 and works the same for open_clip, transformers and plain torch modules.
    """
    import torch

    with torch.inference_mode():
        if dtype == torch.float32:
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))


def is_local_path(source: str) -> bool:
    """True when ``source`` names an existing file or directory (not a hub name)."""
    return Path(source).expanduser().exists()


def to_numpy(tensor: Any) -> np.ndarray:
    """A model output (tensor, or a transformers output with ``pooler_output``) -> float32 array."""
    if not hasattr(tensor, "detach"):
        pooled = None
        for field in ("pooler_output", "text_embeds", "image_embeds", "audio_embeds"):
            pooled = getattr(tensor, field, None)
            if pooled is not None:
                break
        if pooled is None:
            raise GcmrError(f"cannot read embeddings from a {type(tensor).__name__} model output")
        tensor = pooled
    return tensor.detach().float().cpu().numpy()


class Encoder:
    """Base class and protocol of every backend.

    Attributes: ``name`` (the spec string that rebuilds it; stamped into corpus.json as
    ``embedding_model``), ``dim``, ``modality`` (the media it encodes: image, audio, video, or
    ``text`` for text-only encoders), ``has_text`` (whether :meth:`encode_text` works),
    ``batch_size``.
    """

    name: str = "encoder"
    dim: int = 0
    modality: str = "image"
    has_text: bool = False
    batch_size: int = 32

    def encode_media(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Embed media files -> float32 [n, dim]."""
        raise GcmrError(f"encoder {self.name!r} cannot embed media files (it is a "
                        f"{self.modality} encoder)")

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts -> float32 [n, dim]."""
        raise GcmrError(f"encoder {self.name!r} has no text tower; pick a text encoder for text "
                        f"(e.g. --text-encoder minilm)")

    def encode_items(self, ids: Sequence[str], paths: Sequence[str | Path]) -> np.ndarray:
        """Embed corpus items; the default embeds their media files (the precomputed backend
        looks the ids up instead)."""
        return self.encode_media(paths)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim}, modality={self.modality!r})"


class TorchEncoder(Encoder):
    """Shared state of the torch backends: device, compute dtype, batch size, loader threads."""

    def __init__(self, *, device: str | None = None, precision: str = "auto",
                 batch_size: int = 32, workers: int | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.device = select_device(device)
        self.dtype = select_dtype(precision, self.device)
        self.batch_size = int(batch_size)
        self.workers = default_workers() if workers is None else max(1, int(workers))

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """Apply a loader (decode + preprocess) to a batch, in threads when workers > 1.

        Decoding JPEGs / audio is often the bottleneck on a GPU; PIL, soundfile and PyAV release
        the GIL while decoding, so threads overlap it without worker processes.
        """
        if self.workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            return list(pool.map(fn, items))

    def _encode_batched(self, items: Sequence[Any], fn: Callable[[Sequence[Any]], np.ndarray]
                        ) -> np.ndarray:
        outs = [fn(batch) for batch in batched(items, self.batch_size)]
        if not outs:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(outs, axis=0))


class ImageEncoder(TorchEncoder):
    """An encoder of still images: subclasses implement :meth:`_encode_image_batch` on PIL
    images; files are decoded here (so the video wrapper can feed decoded frames)."""

    modality = "image"

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """Embed PIL images -> float32 [n, dim], L2-normalized."""
        return self._encode_batched(list(images), self._encode_image_batch)

    def encode_media(self, paths: Sequence[str | Path]) -> np.ndarray:
        from gcmr.encoders.media import load_image

        def run(batch: Sequence[str | Path]) -> np.ndarray:
            return self._encode_image_batch(self._map(load_image, batch))

        return self._encode_batched(list(paths), run)

    def _encode_image_batch(self, images: Sequence[Any]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError
