"""Config dataclasses round-trip through JSON and reject bad fields by name."""

from __future__ import annotations

import pytest

from gcmr.errors import ConfigError
from gcmr.train import TrainConfig


def test_round_trip() -> None:
    config = TrainConfig(epochs=3, omega=0.0, val_split=None, select_metric="R@1")
    again = TrainConfig.from_json(config.to_json())
    assert again == config


def test_unknown_and_bad_fields_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="TrainConfig.epochs: expected an integer"):
        TrainConfig.from_dict({"epochs": "3"})
    with pytest.raises(ConfigError, match="select_metric"):
        TrainConfig(select_metric="R@3")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainConfig.from_json("{")
