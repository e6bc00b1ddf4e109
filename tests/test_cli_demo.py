"""``gcmr demo`` end to end on a tiny world, and the README's promises about the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gcmr.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path: Path, capsys) -> None:
    code = main(["demo", "--out", str(tmp_path), "--items", "300", "--dim", "32",
                 "--epochs", "1", "--d-model", "32", "--heads", "2", "--ffn", "64",
                 "--encoder-layers", "1", "--decoder-layers", "1", "--threads", "1", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    for metric in ("R@1", "R@5", "R@10", "MRR@10"):
        assert metric in out
    assert "queries/s" in out and "oracle ceiling" in out
    # the kept artifacts are the real ones: the model was trained with the flags given
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["model_config"]["d_model"] == 32
    assert manifest["model_config"]["encoder_layers"] == 1
    assert (tmp_path / "index" / "manifest.json").is_file()


def test_demo_model_defaults_are_cpu_sized() -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.items, args.epochs) == (2000, 5)
    assert args.d_model is None  # the demo preset applies unless a flag overrides it
    assert args.preset == "demo" and args.lr is None  # lr: the preset's
    from gcmr.train.config import load_preset

    demo = load_preset("demo")
    assert demo["model"]["d_model"] < 192
    # today's demo, exactly: d_model 128 / 4 heads / FFN 512 (3 + 3 layers), lr 2e-3
    assert demo["model"] == {"d_model": 128, "n_heads": 4, "d_ff": 512}
    assert demo["train"] == {"lr": 2e-3}


def _quickstart() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.DOTALL)


def test_readme_quickstart_has_exactly_two_command_lines() -> None:
    blocks = _quickstart()
    assert len(blocks) == 2 and all("\n" not in b.strip() for b in blocks)
    install_demo, install_tests = blocks
    assert install_demo.rstrip().endswith("gcmr demo") and "pip install" in install_demo
    assert install_tests.rstrip().endswith("python -m pytest -q")
    assert "torch==" in install_demo and "torch==" in install_tests  # never a bare CUDA torch


def test_ci_runs_the_readme_test_command() -> None:
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "## Quickstart" in ci and "pytest" in ci


def test_readme_documents_every_verb() -> None:
    text = README.read_text(encoding="utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = [verb for verb in sub.choices if f"gcmr {verb}" not in text]
    assert not missing, f"README does not document: {missing}"
