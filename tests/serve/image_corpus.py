"""Corpora whose items point at local images, for the server's item, media and page tests
(tests/serve/test_serve.py, tests/serve/test_page_browser.py): a PNG writer that needs only
the standard library, and a small photo corpus (scikit-image's bundled photos) with a tiny
model trained on it in a few seconds."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def write_png(path: Path, *, size: int = 8, rgb: tuple[int, int, int] = (200, 40, 40)) -> Path:
    """A valid ``size`` x ``size`` single-colour RGB PNG at ``path``."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


# (scikit-image photo, caption); the last items have no image, one caption holds markup
PHOTOS = [
    ("chelsea", "a ginger cat looking at the camera"),
    ("coffee", "a cup of coffee on a saucer"),
    ("astronaut", "an astronaut in a white space suit"),
    ("rocket", "a rocket on the launch pad"),
    ("hubble_deep_field", "a deep field of distant galaxies"),
    ("coins", "old coins on a table"),
    ("camera", "a man with a camera on a tripod"),
    ("immunohistochemistry", "stained tissue under a microscope"),
    ("colorwheel", "a wheel of colours"),
]
TEXT_ONLY = ["a <b>bold</b> caption & a <script>alert(1)</script> tag",
             "a ginger cat without a picture", "coffee beans without a picture"]


def photo_corpus(root: Path, *, thumb: int = 160) -> Path:
    """``root/corpus``: one item per photo in :data:`PHOTOS` (its ``source`` a PNG in the
    corpus's ``media/`` folder, shrunk to ``thumb`` px) and the :data:`TEXT_ONLY` items with
    no source; clustered random embeddings, each caption also a train and a test query."""
    from PIL import Image
    from skimage import data

    from gcmr.corpus import Query, write_corpus

    captions = [c for _, c in PHOTOS] + TEXT_ONLY
    n = len(captions)
    ids = [f"photo{i:02d}" for i in range(len(PHOTOS))] + [f"text{i}" for i in range(len(TEXT_ONLY))]
    sources = [f"media/{name}.png" for name, _ in PHOTOS] + [None] * len(TEXT_ONLY)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    queries = {"train": [Query(c, (i,)) for c, i in zip(captions, ids)],
               "test": [Query(c.split(" on ")[0], (i,)) for c, i in zip(captions, ids)]}
    corpus = write_corpus(root / "corpus", ids=ids, captions=[[c] for c in captions],
                          embeddings=emb, queries=queries, name="photos", modality="image",
                          sources=sources)
    for name, _ in PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        image.thumbnail((thumb, thumb))
        (corpus / "media").mkdir(exist_ok=True)
        image.save(corpus / "media" / f"{name}.png")
    return corpus


def train_photo_model(root: Path) -> Path:
    """A tiny generative model (pure generation, a few seconds) on :func:`photo_corpus`."""
    from gcmr.corpus import load_corpus
    from gcmr.ids import IndexConfig, build_index
    from gcmr.train import TrainConfig, train

    corpus = photo_corpus(root)
    index = build_index(load_corpus(corpus),
                        IndexConfig(num_clusters=3, codebook_size=4, latent_dim=4,
                                    hidden_dims=[8], epochs=1, max_steps=4, batch_size=8),
                        show_progress=False).save(root / "index")
    train(index, root / "model", show_progress=False,
          config=TrainConfig(epochs=30, batch_size=8, vocab_size=120, val_split=None,
                             dense_weight=0.0),
          model_options={"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 1,
                         "decoder_layers": 1})
    return root / "model"
