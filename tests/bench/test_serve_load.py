"""The serve load benchmark (benchmarks/serve_load.py -> gcmr.bench.serve_load) end to end on
a small world: it builds the tiny model, runs two real ``gcmr serve`` subprocesses (batching
off and on), and writes a report whose numbers add up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")


@pytest.mark.slow
def test_the_serve_load_benchmark_writes_a_consistent_report(tmp_path: Path) -> None:
    from gcmr.bench.serve_load import main

    out = tmp_path / "results"
    assert main(["--out", str(out), "--work", str(tmp_path / "work"), "--items", "200",
                 "--clients", "3", "--requests", "6", "--max-batch", "4",
                 "--max-wait-ms", "20"]) == 0
    doc = json.loads((out / "serve_load.json").read_text())
    assert doc["bench"] == "serve_load" and "load_average" in doc["machine"]
    off, on = doc["results"]
    assert off["setting"]["max_batch"] == 1 and on["health_batching"] == {"max_batch": 4,
                                                                          "max_wait_ms": 20.0}
    for result in doc["results"]:
        assert result["items"] == 200 and result["shutdown_s"] >= 0
        assert result["single"]["requests"] == 6 and result["concurrent"]["requests"] == 18
        for phase in ("single", "concurrent"):
            p = result[phase]
            assert p["errors"] == 0 and p["rss_mib"] > 0 and p["peak_rss_mib"] >= p["rss_mib"]
            assert 0 < p["p50_ms"] <= p["p99_ms"] <= p["max_ms"]
            assert p["load_average_after"] is not None
    assert off["concurrent"]["mean_batch"] == 1.0 and off["single"]["mean_batch"] == 1.0
    assert 1.0 <= on["concurrent"]["mean_batch"] <= 3.0  # never more than the 3 clients
    assert (tmp_path / "work" / "server-4.log").is_file()  # the server's own output
    md = (out / "serve_load.md").read_text()
    assert md.count("| batching off |") == 2 and md.count("| micro-batching |") == 2
