"""Fixtures for the benchmark tests: a tiny synthetic world, tiny model and index settings,
and the check every written report passes.

Helpers are exposed as fixtures (not imported) so test directories never clash on module
names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY_MODEL = {"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 1, "decoder_layers": 1}
TINY_INDEX = {"num_clusters": 8, "codebook_size": 8, "latent_dim": 8, "hidden_dims": [32],
              "epochs": 1, "max_steps": 10, "batch_size": 64, "kmeans_epochs": 2}


@pytest.fixture
def tiny_model() -> dict:
    """Model options of a tiny generative retriever (and dense tower)."""
    return dict(TINY_MODEL)


@pytest.fixture
def tiny_index() -> dict:
    """IndexConfig fields of a fast tiny CART index."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in TINY_INDEX.items()}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    from gcmr.corpus.synth import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("bench") / "world"
    synthesize(out, SynthConfig(num_items=300, seed=0, dim=32), show_progress=False)
    return out


def _check_report(out: Path, name: str, columns: list[str]) -> dict:
    doc = json.loads((out / f"{name}.json").read_text())
    assert doc["bench"] == name and doc["columns"] == columns
    assert doc["machine"]["cores"] >= 1 and "torch" in doc["machine"]["versions"]
    assert doc["command"]
    md = (out / f"{name}.md").read_text()
    assert md.startswith("# ") and "| " + " | ".join(columns) + " |" in md
    png = (out / f"{name}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    for row in doc["rows"]:
        assert set(row) >= {"method"}
    return doc


@pytest.fixture
def check_report():
    """``check_report(out, name, columns) -> doc``: the report's JSON, Markdown and PNG are
    there and agree on the columns."""
    return _check_report
