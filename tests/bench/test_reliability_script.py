"""benchmarks/reliability.py: importable, and a few cheap cases (no model needed) are caught."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reliability.py"


@pytest.fixture(scope="module")
def reliability():
    spec = importlib.util.spec_from_file_location("gcmr_bench_reliability", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_case_list(reliability):
    assert len(reliability.CASES) >= 40
    assert len({c.name for c in reliability.CASES}) == len(reliability.CASES)
    groups = {c.group for c in reliability.CASES}
    assert {"corpus", "artifact", "cli", "library", "server"} <= groups


def test_cheap_cases_are_caught(reliability, tmp_path):
    names = ["malformed JSONL line in items.jsonl", "missing corpus.json",
             "gcmr synth into an existing world without --overwrite",
             "load_searcher(a corpus dir)"]
    assert all(reliability.BY_NAME[n].cheap for n in names)
    rows = reliability.run_cases(names, tmp_path)
    assert [r["case"] for r in rows] == names
    for row in rows:
        assert row["outcome"] == reliability.CAUGHT, row
    assert "line 6" in rows[0]["detail"]
    assert "still loads" in rows[2]["detail"]
    assert not (tmp_path / "IDX").exists()  # cheap cases build no index or model
