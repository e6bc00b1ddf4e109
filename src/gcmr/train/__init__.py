"""Training: losses (CE, R-Drop KL, discriminative), schedules, trainer, checkpoints."""

from gcmr.train.config import TrainConfig
from gcmr.train.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
