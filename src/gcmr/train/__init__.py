"""Training: one loop (:func:`gcmr.train.loop.fit`) with CART, AVG and InfoNCE losses, the
generative and dense trainers on top of it, schedules, data and checkpoints.

Names are imported on first use (PEP 562), so ``import gcmr.train.config`` (the torch-free
:class:`TrainConfig` and presets the CLI reads for its help texts) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gcmr.extras import lazy_exports

if TYPE_CHECKING:
    from gcmr.train.config import TrainConfig
    from gcmr.train.loop import TrainResult
    from gcmr.train.trainer import train

_HOMES = {"TrainConfig": "gcmr.train.config", "TrainResult": "gcmr.train.loop",
          "train": "gcmr.train.trainer"}

__all__ = ["TrainConfig", "TrainResult", "train"]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, __all__)
