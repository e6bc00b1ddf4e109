"""The demo pipeline as a library function (:func:`gcmr.bench.demo.run_demo`) on a tiny world,
and the throughput measurement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gcmr.bench.demo import DemoObserver, DemoResult, measure_throughput, run_demo


class _Recorder(DemoObserver):
    def __init__(self) -> None:
        self.stages: list[str] = []
        self.notes: list[str] = []
        self.indexes: list[Path] = []

    def stage(self, title: str) -> None:
        self.stages.append(title)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def index_built(self, index, path: Path) -> None:
        self.indexes.append(Path(path))


@pytest.mark.slow
def test_run_demo_returns_what_it_measured(tmp_path: Path, tiny_model: dict) -> None:
    observer = _Recorder()
    result = run_demo(tmp_path / "work", items=300, dim=32, epochs=1, threads=1,
                      model_options=tiny_model, show_progress=False, observer=observer)
    assert isinstance(result, DemoResult)
    assert list(result.metrics) == ["R@1", "R@5", "R@10", "MRR@10"]
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert set(result.oracle) >= set(result.metrics)
    assert [row[0] for row in result.rows] == list(result.metrics)
    assert all(row[2] == result.oracle[row[0]] for row in result.rows)
    assert result.queries > 0 and result.candidates == 300
    assert result.queries_per_s > 0
    assert list(result.timings) == ["synth + validate", "index", "train"]
    assert result.num_pairs > 0 and result.epochs_run == 1
    # the model options override the demo preset, and the artifacts are the real ones
    assert result.model_options["d_model"] == 32 and result.model_options["n_heads"] == 2
    manifest = json.loads((result.model_dir / "manifest.json").read_text())
    assert manifest["model_config"]["d_model"] == 32
    assert result.model_dir == tmp_path / "work" / "model"
    assert (result.index_dir / "manifest.json").is_file()
    assert (result.corpus_dir / "corpus.json").is_file()
    assert len(observer.stages) == 4 and observer.stages[0].startswith("1/4 synthetic world")
    assert observer.indexes == [result.index_dir]
    assert any(n.startswith("model: d_model 32") for n in observer.notes)


def test_demo_result_rows_compare_with_the_oracle(tmp_path: Path) -> None:
    result = DemoResult(work=tmp_path, corpus_dir=tmp_path, index_dir=tmp_path,
                        model_dir=tmp_path, metrics={"R@1": 0.25, "MRR@10": 0.5},
                        oracle={"R@1": 0.5}, queries=4, candidates=10, queries_per_s=1.0,
                        timings={}, num_pairs=1, epochs_run=1, best_epoch=1)
    assert result.rows == [("R@1", 0.25, 0.5, "50.0%"), ("MRR@10", 0.5, "-", "-")]


def test_measure_throughput_times_full_batches() -> None:
    calls: list[tuple[int, int | None]] = []

    class Fake:
        def search_rows(self, texts, *, k, beam, batch_size=None):
            calls.append((len(texts), batch_size))
            return np.zeros((len(texts), k)), np.zeros((len(texts), k), dtype=np.int64)

    qps = measure_throughput(Fake(), ["a", "b", "c"], batch=10, beam=4, repeats=2)
    assert qps > 0
    assert calls == [(8, None), (10, 10), (10, 10)]  # warm-up, then full batches of 10
