"""Flags derived from the config dataclasses (gcmr.cli.options): every flag keeps its name and
meaning, only the flags given change anything, and the layers stack as documented:
dataclass defaults < preset < --config < explicit flags."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gcmr.cli import build_parser
from gcmr.cli.options import (
    MODEL_OPTIONS,
    TOWER_OPTIONS,
    TRAIN_OPTIONS,
    Option,
    add_options,
    changes_from,
    model_options,
    option_table,
    tower_options,
    train_config,
)
from gcmr.config import JsonConfig
from gcmr.errors import ConfigError
from gcmr.train.config import TrainConfig, load_preset


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_no_flags_change_nothing() -> None:
    args = _parse("train", "IDX", "OUT")
    assert changes_from(args, TRAIN_OPTIONS) == {} and changes_from(args, MODEL_OPTIONS) == {}
    assert train_config(args) == TrainConfig()
    assert model_options(args) == {}


def test_every_train_flag_maps_to_its_field() -> None:
    args = _parse("train", "IDX", "OUT", "--method", "avg", "--epochs", "3", "--batch-size",
                  "8", "--lr", "0.01", "--warmup-epochs", "0.5", "--restart-epochs", "2",
                  "--omega", "0.2", "--select-metric", "R@1", "--patience", "2",
                  "--max-val-queries", "50", "--no-captions", "--vocab-size", "300",
                  "--max-query-length", "16", "--dis-beam", "4", "--dis-weight", "0.5",
                  "--no-voken-embedding", "--seed", "7", "--device", "cpu", "--threads", "2",
                  "--max-steps", "9", "--no-val", "--val-split", "test")
    assert changes_from(args, TRAIN_OPTIONS) == {
        "method": "avg", "epochs": 3, "batch_size": 8, "lr": 0.01, "warmup_epochs": 0.5,
        "restart_epochs": 2.0, "omega": 0.2, "val_split": None, "select_metric": "R@1",
        "patience": 2, "max_val_queries": 50, "use_captions": False, "vocab_size": 300,
        "max_query_length": 16, "dis_beam": 4, "dis_weight": 0.5,
        "voken_embedding_init": False, "seed": 7, "device": "cpu", "num_threads": 2,
        "max_steps": 9}  # --no-val wins over --val-split, as before
    config = train_config(_parse("train", "IDX", "OUT", "--no-train-queries", "--backbone",
                                 "t5:some/dir"))
    assert config.use_train_queries is False and config.backbone == "t5:some/dir"


def test_model_flags_keep_their_names() -> None:
    args = _parse("train", "IDX", "OUT", "--d-model", "64", "--heads", "2", "--ffn", "128",
                  "--encoder-layers", "1", "--decoder-layers", "2", "--dropout", "0",
                  "--fusion", "none")
    assert model_options(args) == {"d_model": 64, "n_heads": 2, "d_ff": 128,
                                   "encoder_layers": 1, "decoder_layers": 2, "dropout": 0.0,
                                   "fusion": "none"}


def test_dense_tower_flags() -> None:
    args = _parse("train-dense", "SRC", "OUT", "--d-model", "64", "--heads", "2", "--pooling",
                  "first", "--temperature", "0.1", "--fixed-temperature", "--resume")
    assert tower_options(args) == {"d_model": 64, "n_heads": 2, "pooling": "first",
                                   "temperature": 0.1, "learn_temperature": False}
    assert args.resume is True
    assert {o.flag for o in TOWER_OPTIONS} >= {"--d-model", "--heads", "--ffn",
                                               "--encoder-layers", "--dropout"}
    with pytest.raises(SystemExit):
        _parse("train-dense", "SRC", "OUT", "--decoder-layers", "2")  # the tower has no decoder


def test_argparse_types_and_choices_refuse_bad_values() -> None:
    for argv in (["--epochs", "0"], ["--method", "bert"], ["--select-metric", "R@2"],
                 ["--fusion", "late"], ["--warmup-epochs", "-1"]):
        with pytest.raises(SystemExit):
            _parse("train", "IDX", "OUT", *argv)


def test_config_file_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"epochs": 5, "lr": 0.005, "batch_size": 32}))
    config = train_config(_parse("train", "IDX", "OUT", "--config", str(cfg), "--lr", "0.01"))
    assert (config.epochs, config.lr, config.batch_size) == (5, 0.01, 32)
    with pytest.raises(ConfigError, match="no such config file"):
        train_config(_parse("train", "IDX", "OUT", "--config", str(tmp_path / "nope.json")))
    cfg.write_text(json.dumps({"epochz": 5}))
    with pytest.raises(ConfigError, match="train.json.*unknown field"):
        train_config(_parse("train", "IDX", "OUT", "--config", str(cfg)))


def test_precedence_defaults_preset_config_flags(tmp_path: Path) -> None:
    preset_file = tmp_path / "mine.json"
    preset_file.write_text(json.dumps({
        "description": "test", "model": {"d_model": 64, "n_heads": 2, "d_ff": 256},
        "train": {"lr": 0.004, "epochs": 4, "batch_size": 64}}))
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({"epochs": 6, "batch_size": 128}))
    args = _parse("train", "IDX", "OUT", "--preset", str(preset_file), "--config", str(cfg),
                  "--batch-size", "16", "--ffn", "512")
    preset = load_preset(args.preset)
    config = train_config(args, preset)
    assert config.lr == 0.004  # preset over the default
    assert config.epochs == 6  # --config over the preset
    assert config.batch_size == 16  # the flag over --config
    assert config.warmup_epochs == TrainConfig().warmup_epochs  # nobody set it
    assert model_options(args, preset) == {"d_model": 64, "n_heads": 2, "d_ff": 512}
    # the dense tower takes the preset's encoder fields
    tower = tower_options(_parse("train-dense", "SRC", "OUT"), preset)
    assert tower == {"d_model": 64, "n_heads": 2, "d_ff": 256}


@dataclass
class _Toy(JsonConfig):
    size: int = 3
    name: str = field(default="a", metadata={"choices": ("a", "b")})
    ratio: float | None = None
    on: bool = True


def test_the_mechanism_on_a_toy_config() -> None:
    toy = option_table(_Toy, Option("size", "--size", "how big"),
                       Option("name", "--name", "which one"),
                       Option("ratio", "--ratio", "a ratio"),
                       Option("on", "--off", "switch it off"))
    parser = argparse.ArgumentParser()
    add_options(parser, _Toy, toy, {"size": 5})
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["size"] == "how big (default 5)"  # the override, for help only
    assert helps["name"] == "which one (default a)" and helps["ratio"] == "a ratio"
    assert helps["off"] == "switch it off"
    assert changes_from(parser.parse_args([]), toy) == {}
    assert changes_from(parser.parse_args(["--size", "7", "--name", "b", "--ratio", "0.5",
                                           "--off"]), toy) == \
        {"size": 7, "name": "b", "ratio": 0.5, "on": False}
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "c"])  # choices from the field's metadata
    with pytest.raises(TypeError, match="no field 'nope'"):
        option_table(_Toy, Option("nope", "--nope"))
