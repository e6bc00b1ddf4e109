"""``gcmr bench``: argument parsing into the benchmark configs, and a tiny memory report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


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
def test_cli_bench_memory_writes_only_the_memory_report(tmp_path: Path, capsys, tiny_model: dict,
                                                        tiny_index: dict, check_report) -> None:
    pytest.importorskip("faiss")
    pytest.importorskip("matplotlib")
    from gcmr.cli import main

    cfg = tmp_path / "scale.json"
    cfg.write_text(json.dumps({
        "sizes": [150], "dim": 16, "methods": ["cart", "dense-exact", "faiss-hnsw"],
        "max_fit_items": 150, "index_max_steps": 3, "tokenizer_items": 50, "vocab_size": 200,
        "exact_in_memory_mb": 0,
        "index": {k: v for k, v in tiny_index.items() if k != "max_steps"},
        "model": tiny_model}))
    out = tmp_path / "out"
    assert main(["bench", "memory", "--config", str(cfg), "--out", str(out), "--quiet",
                 "--threads", "1"]) == 0
    doc = check_report(out, "memory", ["method", "candidates", "total", "model_bytes",
                                        "ids_bytes", "trie_bytes", "embedding_bytes",
                                        "index_bytes", "build_s", "note"])
    assert [r["method"] for r in doc["rows"]] == ["CART", "dense exact", "faiss HNSW32"]
    exact = doc["rows"][1]
    assert exact["note"] == "streamed from the float32 memmap"
    assert exact["embedding_bytes"] == 150 * 16 * 4
    assert not (out / "throughput.json").exists()
    assert (out / "work").is_dir()  # default work directory under --out
    capsys.readouterr()
