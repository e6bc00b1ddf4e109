"""Training: one loop (:func:`gcmr.train.loop.fit`) with CART, AVG and InfoNCE losses, the
generative and dense trainers on top of it, schedules, data and checkpoints."""

from gcmr.train.config import TrainConfig
from gcmr.train.loop import TrainResult
from gcmr.train.trainer import train

__all__ = ["TrainConfig", "TrainResult", "train"]
