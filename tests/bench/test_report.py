"""The report writer and its formatting helpers (:mod:`gcmr.bench.report`)."""

from __future__ import annotations

import json
from pathlib import Path

from gcmr.bench.report import BENCH_FORMAT, command_line, human_bytes, markdown_table, write_report


def test_markdown_table_formats_numbers() -> None:
    table = markdown_table(["method", "R@1", "qps", "n"],
                           [{"method": "CART", "R@1": 0.5, "qps": 1234.5, "n": 20_000},
                            {"method": "dense", "R@1": float("nan")}])
    assert table.splitlines() == ["| method | R@1 | qps | n |", "|---|---|---|---|",
                                  "| CART | 0.5000 | 1,234 | 20,000 |",
                                  "| dense | - | - | - |"]


def test_human_bytes_and_command_line() -> None:
    assert (human_bytes(None), human_bytes(512), human_bytes(2048)) == ("-", "512 B", "2.0 KB")
    assert command_line(["/usr/bin/gcmr", "bench", "a b"]) == "gcmr bench 'a b'"


def test_write_report_writes_json_and_markdown(tmp_path: Path) -> None:
    machine = {"cpu": "test cpu", "cores": 2, "torch_threads": 1, "versions": {"torch": "x"}}
    doc = write_report(tmp_path / "out", "speed", title="Speed", columns=["method", "qps"],
                       rows=[{"method": "CART", "qps": 12.5}], settings={"k": 10},
                       command="gcmr bench", machine=machine, notes=["a note"], seconds=3.0)
    assert doc["format"] == BENCH_FORMAT and doc["bench"] == "speed" and doc["seconds"] == 3.0
    assert json.loads((tmp_path / "out" / "speed.json").read_text()) == doc
    md = (tmp_path / "out" / "speed.md").read_text()
    assert md.startswith("# Speed") and "| CART | 12.5 |" in md and "- a note" in md
    assert "test cpu, 2 cores" in md
