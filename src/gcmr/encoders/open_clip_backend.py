"""open_clip image + text towers: any architecture (built-in name, a model config JSON, or
``local-dir:`` / ``hf-hub:``) with a pretrained tag or a local checkpoint file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.encoders.base import ImageEncoder, inference, to_numpy
from gcmr.errors import ConfigError, GcmrError
from gcmr.extras import require


class OpenClipEncoder(ImageEncoder):
    """``open_clip:MODEL[:PRETRAINED]``.

    MODEL is a built-in architecture (``ViT-B-32``), a path to a model config JSON (registered
    with ``open_clip.add_model_config``; the file stem is the model name), ``local-dir:DIR`` or
    ``hf-hub:ORG/REPO``. PRETRAINED is an open_clip tag (``laion2b_s34b_b79k``, fetched into the
    Hugging Face cache the first time) or a checkpoint file (``.pt``, ``.bin``, ``.safetensors``).
    """

    has_text = True

    def __init__(self, model: str, pretrained: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        open_clip = require("open_clip", "encoders", purpose="open_clip encoders")
        model_name = model
        if model.endswith(".json"):
            cfg = Path(model).expanduser()
            if not cfg.is_file():
                raise GcmrError(f"{cfg}: open_clip model config not found")
            open_clip.add_model_config(cfg)
            model_name = cfg.stem
        elif not model.startswith(("local-dir:", "hf-hub:")) and \
                model.replace("/", "-") not in open_clip.list_models():
            raise ConfigError(f"open_clip has no model {model!r}; pass a built-in name "
                              f"(e.g. ViT-B-32), a config .json, local-dir:DIR or hf-hub:ORG/REPO")
        if pretrained and ("/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin",
                                                                    ".safetensors"))):
            if not Path(pretrained).expanduser().is_file():
                raise GcmrError(f"{pretrained}: open_clip checkpoint file not found")
            pretrained = str(Path(pretrained).expanduser())
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained or None, device=self.device)
        except (RuntimeError, ValueError, FileNotFoundError, OSError) as exc:
            raise GcmrError(f"open_clip could not load {model_name!r} with pretrained="
                            f"{pretrained!r}: {exc}") from exc
        self.model = net.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.name = f"open_clip:{model}" + (f":{pretrained}" if pretrained else "")
        if not pretrained and not model.startswith(("local-dir:", "hf-hub:")):
            from gcmr.progress import note

            note(f"{self.name}: no pretrained weights given; the model has random weights")
        self.dim = int(self.encode_text(["a"]).shape[1])

    def _encode_image_batch(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        x = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        with inference(self.device, self.dtype):
            return to_numpy(self.model.encode_image(x))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        def run(batch: Sequence[str]) -> np.ndarray:
            tokens = self.tokenizer(list(batch)).to(self.device)
            with inference(self.device, self.dtype):
                return to_numpy(self.model.encode_text(tokens))

        return self._encode_batched(list(texts), run)
