"""Training: one loop (:func:`gcmr.train.loop.fit`) with CART, AVG and InfoNCE losses, the
generative and dense trainers on top of it, schedules, data and checkpoints.

Names are imported on first use (PEP 562), so ``import gcmr.train.config`` (the torch-free
:class:`TrainConfig` and presets the CLI reads for its help texts) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gcmr.train.config import TrainConfig
    from gcmr.train.loop import TrainResult
    from gcmr.train.trainer import train

_HOMES = {"TrainConfig": "gcmr.train.config", "TrainResult": "gcmr.train.loop",
          "train": "gcmr.train.trainer"}

__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # the next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
