"""``transformers`` dual encoders: CLIP / SigLIP (image + text) and CLAP (audio + text), loaded
from a local directory (``save_pretrained`` layout; never touches the network) or a hub name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.encoders.base import ImageEncoder, TorchEncoder, inference, is_local_path, to_numpy
from gcmr.errors import ConfigError, GcmrError
from gcmr.extras import require


def _source(source: str) -> tuple[str, dict[str, Any]]:
    """A local directory loads with ``local_files_only`` (no hub request, works offline); a hub
    name goes through the Hugging Face cache."""
    if is_local_path(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise GcmrError(f"{path}: expected a model directory (save_pretrained layout)")
        if not (path / "config.json").is_file():
            raise GcmrError(f"{path}: no config.json; is this a transformers model directory?")
        return str(path), {"local_files_only": True}
    if source.startswith((".", "/", "~")):
        raise GcmrError(f"{source}: model directory not found")
    return source, {}


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + " ..."


def _load(kind: str, source: str, method: str) -> tuple[Any, Any, Any, str]:
    """(model, media processor, tokenizer or None, resolved path) for a dual encoder whose model
    must have ``method`` (get_image_features / get_audio_features)."""
    transformers = require("transformers", "encoders", purpose=f"transformers {kind} encoders")
    path, opts = _source(source)
    try:
        model = transformers.AutoModel.from_pretrained(path, **opts)
    except (OSError, ValueError, KeyError) as exc:
        raise GcmrError(f"cannot load a transformers model from {source!r}: {_short(exc)}") from exc
    if not hasattr(model, method):
        what = "a CLAP model" if kind == "clap" else "a CLIP-like dual encoder"
        raise GcmrError(f"{source}: {type(model).__name__} is not {what} (no {method})")
    try:
        if kind == "clap":
            processor = transformers.AutoFeatureExtractor.from_pretrained(path, **opts)
        else:
            processor = transformers.AutoImageProcessor.from_pretrained(path, **opts)
    except (OSError, ValueError, KeyError) as exc:
        what = "feature extractor" if kind == "clap" else "image processor"
        raise GcmrError(f"{source}: no {what} config (preprocessor_config.json) "
                        f"({_short(exc)})") from exc
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, **opts)
    except (OSError, ValueError, KeyError, TypeError):
        tokenizer = None  # a media-only checkpoint: no text tower
    return model, processor, tokenizer, path


class _TextTower:
    """Shared text side of the transformers dual encoders."""

    model: Any
    tokenizer: Any
    device: Any
    dtype: Any
    name: str
    pad_to_max: bool = False

    def _max_length(self) -> int:
        limit = int(getattr(self.tokenizer, "model_max_length", 77) or 77)
        text_cfg = getattr(self.model.config, "text_config", None)
        positions = getattr(text_cfg, "max_position_embeddings", None)
        if positions:
            # RoBERTa-style position ids start after the padding index: keep 2 spare positions
            limit = min(limit, int(positions) - (2 if "clap" in type(self.model).__name__.lower()
                                                 else 0))
        return max(1, min(limit, 512))

    def _encode_text_batch(self, batch: Sequence[str]) -> np.ndarray:
        if self.tokenizer is None:
            raise GcmrError(f"{self.name}: the checkpoint has no tokenizer, so no text tower")
        enc = self.tokenizer(list(batch), padding="max_length" if self.pad_to_max else True,
                             truncation=True, max_length=self._max_length(), return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        if self.pad_to_max:
            enc.pop("attention_mask", None)  # SigLIP was trained on max-length padding, no mask
        with inference(self.device, self.dtype):
            return to_numpy(self.model.get_text_features(**enc))


class HFImageTextEncoder(_TextTower, ImageEncoder):
    """``hf-clip:SRC`` / ``hf-siglip:SRC``: ``get_image_features`` / ``get_text_features`` of a
    transformers CLIP-like model (CLIP, SigLIP, SigLIP2, ...)."""

    def __init__(self, source: str, *, kind: str = "clip", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in ("clip", "siglip"):
            raise ConfigError(f"kind must be clip or siglip, got {kind!r}")
        model, self.processor, self.tokenizer, _ = _load(kind, source, "get_image_features")
        self.model = model.eval().to(self.device)
        self.pad_to_max = kind == "siglip"
        self.has_text = self.tokenizer is not None and hasattr(model, "get_text_features")
        self.name = f"hf-{kind}:{source}"
        from PIL import Image

        self.dim = int(self._encode_image_batch([Image.new("RGB", (8, 8))]).shape[1])

    def _encode_image_batch(self, images: Sequence[Any]) -> np.ndarray:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        with inference(self.device, self.dtype):
            return to_numpy(self.model.get_image_features(pixel_values=pixels.to(self.device)))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if not self.has_text:
            return super().encode_text(texts)
        return self._encode_batched(list(texts), self._encode_text_batch)


class HFClapEncoder(_TextTower, TorchEncoder):
    """``hf-clap:SRC``: a transformers CLAP model; audio is decoded, mixed to mono and resampled to
    the feature extractor's rate (48 kHz for the LAION checkpoints)."""

    modality = "audio"

    def __init__(self, source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        model, self.processor, self.tokenizer, _ = _load("clap", source, "get_audio_features")
        self.model = model.eval().to(self.device)
        self.sample_rate = int(getattr(self.processor, "sampling_rate", 48000))
        self.has_text = self.tokenizer is not None
        self.name = f"hf-clap:{source}"
        self.dim = int(self._encode_waves([np.zeros(self.sample_rate // 10, np.float32)]).shape[1])

    def _load_wave(self, path: str | Path) -> np.ndarray:
        from gcmr.encoders.media import load_audio

        return load_audio(path, sample_rate=self.sample_rate)[0]

    def _encode_waves(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        feats = self.processor(list(waves), sampling_rate=self.sample_rate, return_tensors="pt")
        feats = {k: v.to(self.device) for k, v in feats.items()}
        with inference(self.device, self.dtype):
            return to_numpy(self.model.get_audio_features(**feats))

    def encode_media(self, paths: Sequence[str | Path]) -> np.ndarray:
        return self._encode_batched(list(paths),
                                    lambda b: self._encode_waves(self._map(self._load_wave, b)))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if not self.has_text:
            return super().encode_text(texts)
        return self._encode_batched(list(texts), self._encode_text_batch)
