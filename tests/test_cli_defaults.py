"""Help texts state the library's real defaults (they drifted once: 256 shown, 192 used).

The flags are derived from the config dataclasses (:mod:`gcmr.cli.options`), so these tests
read the help the parser actually prints and compare it with the dataclass defaults."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from gcmr.cli import build_parser


def _subparser(*verbs: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for verb in verbs:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[verb]
    return parser


def _helps(*verbs: str) -> dict[str, str]:
    return {a.option_strings[0]: a.help or "" for a in _subparser(*verbs)._actions
            if a.option_strings}


def _shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING}


def test_model_help_defaults_match_model_config() -> None:
    from gcmr.cli.options import MODEL_OPTIONS
    from gcmr.model import ModelConfig

    defaults = _defaults(ModelConfig)
    for verbs in (("train",), ("bench", "accuracy")):
        helps = _helps(*verbs)
        for option in MODEL_OPTIONS:
            if not option.show_default:  # a default that follows the data says so itself
                assert "default" in helps[option.flag], (verbs, option.flag)
                continue
            assert f"(default {_shown(defaults[option.field])})" in helps[option.flag], \
                (verbs, option.flag, helps[option.flag])
    # the ones the old hand copy held
    helps = _helps("train")
    assert "(default 192)" in helps["--d-model"] and "(default 768)" in helps["--ffn"]
    assert "(default 4)" in helps["--heads"] and "(default 0.1)" in helps["--dropout"]


def test_train_help_defaults_match_train_config() -> None:
    from gcmr.cli.options import TRAIN_OPTIONS
    from gcmr.train import TrainConfig

    defaults = _defaults(TrainConfig)
    helps = _helps("train")
    for option in TRAIN_OPTIONS:
        value = defaults[option.field]
        if option.switch or value in (None, "") or not option.show_default:
            continue  # switches, and fields without a default worth showing
        assert f"default {_shown(value)}" in helps[option.flag], (option.flag, helps[option.flag])
    assert "(default 20)" in helps["--epochs"] and "(default 0.001)" in helps["--lr"]
    assert "{cart,avg}" in _subparser("train").format_help()  # choices from the field


def test_dense_tower_flags_are_the_encoder_fields() -> None:
    from gcmr.model.config import DenseTowerConfig, EncoderConfig

    helps = _helps("train-dense")
    assert "--decoder-layers" not in helps and "--fusion" not in helps
    defaults = _defaults(DenseTowerConfig)
    for flag, field in (("--d-model", "d_model"), ("--heads", "n_heads"), ("--ffn", "d_ff"),
                        ("--encoder-layers", "encoder_layers"), ("--dropout", "dropout"),
                        ("--pooling", "pooling"), ("--temperature", "temperature")):
        assert f"(default {_shown(defaults[field])})" in helps[flag]
    assert {f.name for f in dataclasses.fields(EncoderConfig)} >= {"d_model", "n_heads", "d_ff"}


def test_index_help_defaults_match_index_config() -> None:
    from gcmr.cli.options import INDEX_OPTIONS
    from gcmr.ids.config import IndexConfig

    defaults = _defaults(IndexConfig)
    helps = _helps("index")
    for option in INDEX_OPTIONS:
        if option.field in ("shared_codebook", "text_encoder", "text_rank", "num_fine_levels"):
            continue  # a switch; defaults named in the text
        assert f"default {_shown(defaults[option.field])}" in helps[option.flag], option.flag


def test_demo_help_shows_the_demo_preset() -> None:
    from gcmr.train.config import load_preset

    demo = load_preset("demo")
    helps = _helps("demo")
    assert f"(default {demo['model']['d_model']})" in helps["--d-model"]
    assert f"(default {demo['model']['d_ff']})" in helps["--ffn"]
    assert f"{demo['train']['lr']:g}" in helps["--lr"]
    assert "(default 3)" in helps["--decoder-layers"]  # not in the preset: ModelConfig's


@pytest.mark.parametrize("verb", ["train", "train-dense", "demo"])
def test_preset_flag_lists_the_shipped_presets(verb: str) -> None:
    assert "cpu, cuda, demo" in _helps(verb)["--preset"]
