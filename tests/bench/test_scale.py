"""The scale benchmarks (:mod:`gcmr.bench.scale`) on tiny sizes, and their helpers."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow
def test_bench_scale_tiny_sizes(tmp_path: Path, tiny_model: dict, tiny_index: dict, check_report) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("matplotlib")
    from gcmr.bench.scale import ScaleConfig, bench_scale

    config = ScaleConfig(sizes=[400, 200], dim=32, beams=[4], batch_queries=4, batches=1,
                         single_queries=3, max_fit_items=400, index_max_steps=5,
                         tokenizer_items=100, vocab_size=300, threads=1,
                         index={k: v for k, v in tiny_index.items() if k != "max_steps"},
                         model=tiny_model)
    assert config.sizes == [200, 400]
    docs = bench_scale(tmp_path / "out", config, work=tmp_path / "work", command="x",
                       show_progress=False)
    speed = check_report(tmp_path / "out", "throughput",
                          ["method", "candidates", "queries_per_s", "batch_ms", "p50_ms",
                           "p99_ms", "note"])
    memory = check_report(tmp_path / "out", "memory",
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
    assert mem[("CART", 400)]["ids_bytes"] == 400 * 5 * 8  # int64 [N, 1 + 3 fine + counter]
    assert mem[("CART", 400)]["embedding_bytes"] == 0 and mem[("CART", 400)]["trie_bytes"] > 0
    assert mem[("faiss HNSW32", 400)]["index_bytes"] > mem[("faiss Flat", 400)]["index_bytes"]
    # the world file is generated once and reused as a prefix
    assert len(list((tmp_path / "work").glob("world_*.npy"))) == 1


def test_throughput_crossover_sentence() -> None:
    from gcmr.bench.scale import throughput_crossover

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


def test_bench_scale_hybrid_rows(tmp_path, tiny_index, tiny_model) -> None:
    """cart-hybrid: the same identifiers, a model with a query head, the rerank reading the
    memory-mapped world's candidate rows."""
    from gcmr.bench.scale import ScaleConfig, bench_scale

    config = ScaleConfig(sizes=[200], dim=32, beams=[4], batch_queries=4, batches=1,
                         single_queries=3, max_fit_items=200, index_max_steps=5,
                         tokenizer_items=100, vocab_size=300, threads=1,
                         methods=["cart", "cart-hybrid"],
                         index={k: v for k, v in tiny_index.items() if k != "max_steps"},
                         model=tiny_model)
    docs = bench_scale(tmp_path / "out", config, work=tmp_path / "work", command="x",
                       show_progress=False)
    speed = {r["method"] for r in docs["throughput"]["rows"]}
    assert speed == {"CART (beam 4)", "CART hybrid (beam 4)"}
    mem = {r["method"]: r for r in docs["memory"]["rows"]}
    assert mem["CART hybrid"]["model_bytes"] > mem["CART"]["model_bytes"]  # the head
    assert mem["CART hybrid"]["ids_bytes"] == mem["CART"]["ids_bytes"]
