"""The hybrid search through the CLI: --dense-weight trains the query head, search / eval /
serve use it by default, --rerank none is pure generation, dense models refuse --rerank."""

from __future__ import annotations

import json
from pathlib import Path

from gcmr.cli import main

TINY = ["--d-model", "16", "--heads", "2", "--ffn", "32", "--encoder-layers", "1",
        "--decoder-layers", "1", "--vocab-size", "120", "--batch-size", "16", "--quiet"]


def test_dense_weight_trains_a_hybrid_model(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    idx, model = tmp_path / "idx", tmp_path / "model"
    assert main(["index", str(tiny_corpus), str(idx), "--clusters", "4", "--codebook-size",
                 "4", "--epochs", "1", "--max-steps", "5", "--quiet"]) == 0
    assert main(["train", str(idx), str(model), "--epochs", "1", "--val-split", "test",
                 "--dense-weight", "0.5", *TINY]) == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["train_config"]["dense_weight"] == 0.5
    assert manifest["rerank"]["mode"] == "hybrid" and manifest["model_config"]["query_dim"] == 16
    capsys.readouterr()
    runs = {}
    for mode in ("hybrid", "none"):
        assert main(["search", str(model), "red item 3", "-k", "4", "--json", "--rerank",
                     mode]) == 0
        runs[mode] = json.loads(capsys.readouterr().out.splitlines()[0])["results"]
        assert len(runs[mode]) == 4
    assert main(["search", str(model), "red item 3", "-k", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == runs["hybrid"]  # the default
    assert main(["eval", str(model), "--json", "--rerank", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] == 20
    from fastapi.testclient import TestClient

    from gcmr.serve.app import create_app

    client = TestClient(create_app(model, rerank="none"))
    hits = client.get("/search", params={"q": "red item 3", "k": 4}).json()["results"][0]["hits"]
    assert [h["id"] for h in hits] == [h["id"] for h in runs["none"]]


def test_dense_models_refuse_rerank(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "dense"
    assert main(["train-dense", str(tiny_corpus), str(out), "--epochs", "1", "--d-model", "16",
                 "--heads", "2", "--ffn", "32", "--encoder-layers", "1", "--quiet"]) == 0
    assert main(["search", str(out), "red", "--rerank", "none"]) == 2
    assert "nothing to rerank" in capsys.readouterr().err


def test_a_moved_corpus_is_found_with_corpus(tiny_corpus: Path, tmp_path: Path,
                                             capsys) -> None:
    idx, model = tmp_path / "idx", tmp_path / "model"
    assert main(["index", str(tiny_corpus), str(idx), "--clusters", "4", "--codebook-size",
                 "4", "--epochs", "1", "--max-steps", "5", "--quiet"]) == 0
    assert main(["train", str(idx), str(model), "--epochs", "1", "--no-val", *TINY]) == 0
    moved = tmp_path / "moved"
    tiny_corpus.rename(moved)
    capsys.readouterr()
    assert main(["search", str(model), "red item 3", "-k", "2"]) == 2
    assert "embeddings.npy: missing" in capsys.readouterr().err
    assert main(["search", str(model), "red item 3", "-k", "2", "--json", "--index", str(idx),
                 "--corpus", str(moved)]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]
    assert len(hits) == 2 and hits[0]["caption"]  # captions come from the moved corpus
