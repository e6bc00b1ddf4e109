"""Model + training presets as JSON (src/gcmr/presets/*.json, shipped as package data):
the shipped ones, the loader's checks, and --preset on the commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcmr.config import PRESETS_DIR, preset_names
from gcmr.errors import ConfigError
from gcmr.model.config import ModelConfig
from gcmr.train.config import TrainConfig, load_preset


def test_shipped_presets() -> None:
    assert preset_names() == ["cpu", "cuda", "demo"]
    demo, cpu, cuda = load_preset("demo"), load_preset("cpu"), load_preset("cuda")
    assert demo["name"] == "demo" and demo["description"]
    # the demo model and learning rate, as the demo always trained
    assert demo["model"] == {"d_model": 128, "n_heads": 4, "d_ff": 512}
    assert demo["train"] == {"lr": 0.002}
    assert cpu["model"] == demo["model"] and cpu["train"]["lr"] == demo["train"]["lr"]
    assert cuda["model"] == {} and cuda["train"] == {"amp": "bf16"}  # library defaults + bf16
    for name in preset_names():  # every shipped preset is a valid, complete configuration
        preset = load_preset(name)
        TrainConfig.from_dict(preset["train"])
        ModelConfig(vocab_size=100, level_sizes=[8, 8], **preset["model"])


def test_presets_are_package_data() -> None:
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert "presets/*.json" in text
    assert PRESETS_DIR.is_dir() and not list(PRESETS_DIR.glob("*.py"))


def test_a_preset_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"description": "mine", "model": {"d_model": 96, "n_heads": 3},
                                "train": {"epochs": 3, "lr": 1}}))
    preset = load_preset(path)
    assert preset["name"] == str(path) and preset["model"] == {"d_model": 96, "n_heads": 3}
    assert preset["train"] == {"epochs": 3, "lr": 1.0}
    assert isinstance(preset["train"]["lr"], float)  # coerced by the dataclass
    assert load_preset(str(path)) == preset


@pytest.mark.parametrize("data, message", [
    ({"model": {}}, "field 'description' must be a non-empty string"),
    ({"description": "x", "modle": {}}, r"unknown key\(s\) \['modle'\]"),
    ({"description": "x", "model": {"d_modle": 64}}, r"model: unknown field\(s\) \['d_modle'\]"),
    ({"description": "x", "model": {"d_model": "wide"}}, r"model\.d_model: expected an integer"),
    ({"description": "x", "model": {"n_heads": 5}}, r"model: .*divisible by n_heads"),
    ({"description": "x", "model": {"vocab_size": 100}}, r"\['vocab_size'\] cannot be preset"),
    ({"description": "x", "train": {"lr": -1}}, r"train: lr must be > 0"),
    ({"description": "x", "train": {"amp": "fp8"}}, r"train: amp must be"),
    ({"description": "x", "train": []}, "field 'train' must be an object"),
])
def test_preset_errors_name_the_file_and_field(tmp_path: Path, data, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message) as info:
        load_preset(path)
    assert str(path) in str(info.value)


def test_unknown_preset_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown preset 'gpu'.*cpu, cuda, demo"):
        load_preset("gpu")
    with pytest.raises(ConfigError, match="no such preset file"):
        load_preset(tmp_path / "nope.json")
    bad = tmp_path / "broken.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="broken.json: not valid JSON"):
        load_preset(bad)


def test_cli_reports_a_bad_preset_without_traceback(tmp_path: Path, capsys) -> None:
    from gcmr.cli import main

    assert main(["train", str(tmp_path / "idx"), str(tmp_path / "m"), "--preset", "gpu"]) == 2
    assert "unknown preset 'gpu'" in capsys.readouterr().err
    assert main(["train-dense", str(tmp_path), str(tmp_path / "d"), "--preset", "gpu"]) == 2
    assert "unknown preset 'gpu'" in capsys.readouterr().err
    assert main(["demo", "--preset", "gpu", "--out", str(tmp_path / "w")]) == 2
    assert "unknown preset 'gpu'" in capsys.readouterr().err


def test_auto_preset_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """gcmr train / train-dense default to --preset auto: cpu on a CPU, cuda on CUDA; none
    means the library defaults alone."""
    import argparse

    import torch

    from gcmr.cli.options import device_preset, load_preset_of

    assert load_preset(load_preset_of(argparse.Namespace(preset="auto", device="cpu"))
                       ["name"])["name"] == "cpu"
    assert load_preset_of(argparse.Namespace(preset="none")) is None
    assert device_preset("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_preset("auto") == "cuda"
    assert load_preset_of(argparse.Namespace(preset="auto", device="auto"))["name"] == "cuda"


@pytest.mark.parametrize("verb", ["train", "train-dense"])
def test_train_help_says_which_preset_applies(verb: str) -> None:
    from gcmr.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    text = " ".join(sub.choices[verb].format_help().split())
    assert "(default auto)" in text and "cpu on a CPU" in text and "cuda on a CUDA" in text
