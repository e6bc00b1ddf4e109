"""ImageBind (the encoder the CART and AVG papers use): one 1024-d space for images, audio,
video and text. Needs the ``imagebind`` package (which brings torchaudio and pytorchvideo) and
the ``imagebind_huge.pth`` checkpoint on disk."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.encoders.base import ImageEncoder, inference, to_numpy
from gcmr.encoders.media import image_to_tensor, resize_center_crop
from gcmr.errors import GcmrError, MissingExtraError

CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
INSTALL_HINT = (
    "ImageBind is not installed. Install it with\n"
    "    pip install git+https://github.com/facebookresearch/ImageBind.git\n"
    "(it needs torchaudio and pytorchvideo), download the checkpoint\n"
    f"    {CHECKPOINT_URL}  (4.5 GB, CC-BY-NC 4.0)\n"
    "and pass --encoder imagebind:/path/to/imagebind_huge.pth. Without it, use open_clip "
    "(open_clip:ViT-B-32:laion2b_s34b_b79k) for images/video or hf-clap:DIR for audio."
)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_CHECKPOINT = Path(".checkpoints") / "imagebind_huge.pth"  # where ImageBind downloads it


def _import_imagebind() -> tuple[Any, Any]:
    try:
        model_mod = importlib.import_module("imagebind.models.imagebind_model")
        data_mod = importlib.import_module("imagebind.data")
    except ImportError as exc:
        raise MissingExtraError(f"{INSTALL_HINT}\n({exc})") from exc
    return model_mod, data_mod


class ImageBindEncoder(ImageEncoder):
    """``imagebind[:CHECKPOINT]``: vision (images; video via frame pooling), audio and text.

    Images use ImageBind's own transform (224 bicubic resize, centre crop, CLIP normalization);
    audio and text go through ``imagebind.data`` so the mel-spectrogram clips and BPE tokens
    are exactly ImageBind's.
    """

    has_text = True

    def __init__(self, checkpoint: str | Path | None = None, *, media: str = "image",
                 **kwargs: Any) -> None:
        model_mod, self.data = _import_imagebind()
        super().__init__(**kwargs)
        import torch

        ckpt = Path(checkpoint).expanduser() if checkpoint else DEFAULT_CHECKPOINT
        if not ckpt.is_file():
            raise GcmrError(f"{ckpt}: ImageBind checkpoint not found; download {CHECKPOINT_URL} "
                            f"and pass imagebind:/path/to/imagebind_huge.pth")
        model = model_mod.imagebind_huge(pretrained=False)
        try:
            model.load_state_dict(torch.load(str(ckpt), map_location="cpu", weights_only=True))
        except Exception as exc:
            raise GcmrError(f"{ckpt}: not an ImageBind-huge checkpoint ({exc})") from exc
        self.model = model.eval().to(self.device)
        self.modality_type = model_mod.ModalityType
        self.modality = "audio" if media == "audio" else "image"
        self.dim = 1024
        self.name = f"imagebind:{ckpt}"

    def _run(self, key: str, value: Any) -> np.ndarray:
        with inference(self.device, self.dtype):
            return to_numpy(self.model({key: value})[key])

    def _encode_image_batch(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        x = torch.stack([image_to_tensor(resize_center_crop(im, 224), CLIP_MEAN, CLIP_STD)
                         for im in images]).to(self.device)
        return self._run(self.modality_type.VISION, x)

    def encode_media(self, paths: Sequence[str | Path]) -> np.ndarray:
        if self.modality != "audio":
            return super().encode_media(paths)

        def run(batch: Sequence[str | Path]) -> np.ndarray:
            x = self.data.load_and_transform_audio_data([str(p) for p in batch], self.device)
            return self._run(self.modality_type.AUDIO, x)

        return self._encode_batched(list(paths), run)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        def run(batch: Sequence[str]) -> np.ndarray:
            return self._run(self.modality_type.TEXT,
                             self.data.load_and_transform_text(list(batch), self.device))

        return self._encode_batched(list(texts), run)
