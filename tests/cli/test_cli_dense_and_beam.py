"""`gcmr train-dense --resume`, the beam note of `gcmr search` / `gcmr eval`, and a dense
model given --beam (a normal error, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcmr.cli import main
from gcmr.model.io import read_train_log

TOWER = ["--vocab-size", "200", "--d-model", "32", "--heads", "2", "--ffn", "64",
         "--encoder-layers", "1", "--batch-size", "16", "--quiet", "--no-val"]


@pytest.fixture
def dense_model(tiny_corpus: Path, tmp_path: Path) -> Path:
    out = tmp_path / "dense"
    assert main(["train-dense", str(tiny_corpus), str(out), "--epochs", "1", "--max-steps",
                 "50", *TOWER]) == 0
    return out


def test_train_dense_resume(tiny_corpus: Path, dense_model: Path, capsys) -> None:
    assert [r["epoch"] for r in read_train_log(dense_model)] == [1]
    assert main(["train-dense", str(tiny_corpus), str(dense_model), "--epochs", "2",
                 "--max-steps", "50", "--resume", *TOWER]) == 0
    assert [r["epoch"] for r in read_train_log(dense_model)] == [1, 2]
    capsys.readouterr()
    # a different budget is refused, as for gcmr train --resume
    assert main(["train-dense", str(tiny_corpus), str(dense_model), "--epochs", "3",
                 "--resume", *TOWER, "--lr", "0.5"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_dense_model_refuses_beam(dense_model: Path, capsys) -> None:
    assert main(["search", str(dense_model), "red item 3", "--beam", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gcmr search: error:") and "has no beam" in err
    assert "Traceback" not in err and "searching with beam" not in err
    assert main(["eval", str(dense_model), "--beam", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gcmr eval: error:") and "has no beam" in err
    assert main(["search", str(dense_model), "red item 3", "-k", "3"]) == 0  # no beam: fine


def _tiny_preset(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({
        "description": "a tiny model for tests",
        "model": {"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 1,
                  "decoder_layers": 1},
        "train": {"lr": 0.003, "vocab_size": 200, "batch_size": 16, "val_split": None}}))
    return path


def test_train_dense_with_a_preset(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "dense"
    assert main(["train-dense", str(tiny_corpus), str(out), "--preset",
                 str(_tiny_preset(tmp_path)), "--epochs", "1", "--ffn", "48", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    tower = manifest["tower_config"]  # the preset's encoder fields, the flag over the preset
    assert (tower["d_model"], tower["n_heads"], tower["d_ff"], tower["encoder_layers"]) == \
        (32, 2, 48, 1)
    assert manifest["train_config"]["lr"] == 0.003 and manifest["train_config"]["epochs"] == 1


def test_search_and_eval_note_a_widened_beam(tiny_corpus: Path, tmp_path: Path,
                                              capsys) -> None:
    idx, model = tmp_path / "idx", tmp_path / "model"
    assert main(["index", str(tiny_corpus), str(idx), "--clusters", "4", "--codebook-size",
                 "4", "--epochs", "1", "--max-steps", "5", "--quiet"]) == 0
    assert main(["train", str(idx), str(model), "--preset", str(_tiny_preset(tmp_path)),
                 "--epochs", "1", "--quiet"]) == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["model_config"]["d_model"] == 32  # from the preset
    assert manifest["model_config"]["decoder_layers"] == 1
    assert manifest["train_config"]["lr"] == 0.003
    capsys.readouterr()
    note = "searching with beam 5 so that 5 distinct items can be returned"
    assert main(["search", str(model), "red item 3", "-k", "5", "--beam", "2", "--json"]) == 0
    captured = capsys.readouterr()
    assert note in captured.err and note not in captured.out
    assert main(["search", str(model), "red item 3", "-k", "5", "--beam", "5"]) == 0
    assert "searching with beam" not in capsys.readouterr().err
    assert main(["search", str(model), "red item 3", "-k", "5"]) == 0  # default beam: no note
    assert "searching with beam" not in capsys.readouterr().err
    assert main(["eval", str(model), "-k", "12", "--beam", "3", "--json"]) == 0
    assert "searching with beam 12 so that 12 distinct items" in capsys.readouterr().err
