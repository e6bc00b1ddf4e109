"""What identifiers are fitted on: the media embeddings, or a view of the items that text can
predict (``IndexConfig.fit_view``).

CART quantizes the raw media embedding, whose fine structure no caption mentions: on the 5k
world the coarse token is right for ~80% of queries but the first fine token for only ~32%.
Identifiers quantized from query-aligned vectors predict far better (RIPOR builds them from
relevance-trained dense vectors; GENIUS trains its quantizer so that a query and its item
share codes). Our offline analogue: the items' caption text embeddings, i.e. the space the
queries come from.

- ``embeddings``: the corpus embeddings (CART as published);
- ``captions``: each item's unit caption text vector (``caption_embeddings.npy`` when the
  corpus ships it, else the mean of its captions' ``text_encoder`` embeddings, re-normalized:
  :func:`gcmr.ids.avg.item_text_vectors`); every item needs captions;
- ``joint``: ``[unit media ; unit text] / sqrt(2)``: both, equally weighted (cosines in it are
  the mean of the two cosines); an item without captions keeps its media half.

The view is computed once per build and held in memory ([N, D_view] float32; at 1M items and
MiniLM's 384-d that is 1.5 GB for ``captions``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gcmr.errors import ConfigError

FIT_VIEWS = ("embeddings", "captions", "joint")


def fit_view(corpus: Any, config: Any, *, show_progress: bool = False,
             chunk: int = 65536) -> tuple[Any, dict[str, Any]]:
    """``(rows to fit and encode [N, D_view], description for the manifest)``."""
    view = config.fit_view
    if view not in FIT_VIEWS:
        raise ConfigError(f"index option fit_view must be one of {list(FIT_VIEWS)}, got {view!r}")
    if view == "embeddings":
        return corpus.embeddings, {"view": "embeddings"}
    from gcmr.ids.avg import item_text_vectors

    n = len(corpus)
    text, has_text, source = item_text_vectors(corpus, np.arange(n),
                                               text_encoder=config.text_encoder,
                                               show_progress=show_progress)
    missing = int((~has_text).sum())
    info = {"view": view, **source, "items_without_text": missing}
    if view == "captions":
        if missing:
            raise ConfigError(f"{corpus.path}: {missing} of {n} items have no captions, so "
                              f"fit_view = captions cannot place them; use fit_view joint or "
                              f"embeddings")
        return text, info
    media = corpus.embeddings
    out = np.empty((n, media.shape[1] + text.shape[1]), dtype=np.float32)
    for start in range(0, n, chunk):
        block = np.asarray(media[start:start + chunk], dtype=np.float32)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + chunk, :media.shape[1]] = block / np.maximum(norms, 1e-12)
    out[:, media.shape[1]:] = text
    out /= np.sqrt(2.0)
    return out, info
