"""End to end: a tiny Flickr30K-layout dataset goes through benchmarks/paper_protocol.py
(gcmr import with a tiny CLIP encoder and a tiny GIT captioner -> index -> train a few steps ->
eval), then gcmr search returns corpus items."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import media_fixtures as mf
import pytest

pytest.importorskip("gcmr.ids", reason="the identifier index (gcmr.ids) is not available")
pytest.importorskip("gcmr.train", reason="training (gcmr.train) is not available")
pytest.importorskip("gcmr.search", reason="search (gcmr.search) is not available")

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "paper_protocol.py"
COLOURS = ["red", "blue", "green", "yellow"]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("paper_protocol", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_flickr(root: Path, n: int = 16) -> Path:
    images = []
    for i in range(n):
        name = f"{2000 + i}.jpg"
        split = "test" if i % 4 == 3 else "val" if i % 8 == 2 else "train"
        colour = COLOURS[i % 4]
        sentences = [{"raw": f"a {colour} picture number {i}"}, {"raw": f"photo {i} in {colour}"}]
        images.append({"filename": name, "split": split, "sentences": sentences})
        mf.write_image(root / "flickr30k-images" / name, seed=i)
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images}))
    return root


@pytest.mark.slow
def test_paper_protocol_on_a_tiny_dataset(tmp_path, clip_spec, git_dir, capsys):
    data = tmp_path / "data"
    write_tiny_flickr(data / "flickr30k")
    bench = _load_benchmark()
    work, results = tmp_path / "work", tmp_path / "results"
    argv = ["--data-root", str(data), "--datasets", "flickr30k,clotho", "--work", str(work),
            "--results", str(results), "--image-encoder", clip_spec,
            "--captioner", f"hf:{git_dir}", "--num-captions", "2", "--device", "cpu",
            "--index-args", ("--clusters 2 --codebook-size 2 --levels 1 --epochs 1 "
                            "--max-steps 4 --quiet"),
            "--train-args", ("--epochs 1 --max-steps 4 --d-model 32 --heads 2 --ffn 64 "
                            "--encoder-layers 1 --decoder-layers 1 --vocab-size 200 "
                            "--no-val --threads 1 --quiet")]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "skip clotho:" in out and "$ gcmr import flickr30k" in out
    report = json.loads((results / "paper_protocol.json").read_text())["results"]
    assert [r["dataset"] for r in report] == ["flickr30k"] and report[0]["status"] == "ok"
    metrics = report[0]["metrics"]
    assert set(metrics) >= {"R@1", "R@5", "R@10", "MRR@10"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert report[0]["captions_from"] == f"captioner:hf:{git_dir}"
    assert report[0]["candidates"] == 4  # the papers' pool: the test items only
    assert "| flickr30k | ok |" in (results / "paper_protocol.md").read_text()

    # a rerun finds every stage done and repeats nothing
    assert bench.main(argv) == 0
    assert capsys.readouterr().out.count("(done:") == 4

    from gcmr.cli import main

    assert main(["search", str(work / "flickr30k" / "model"), "a red picture", "-k", "3",
                 "--json"]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    ids = {f"{2000 + i}" for i in range(16)}
    text = json.dumps(found)
    assert any(item_id in text for item_id in ids)
