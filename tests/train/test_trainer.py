"""Trainer: determinism, resume equivalence, refusals, and the CLI train/search/eval path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gcmr.artifacts import load_tensors
from gcmr.cli import main
from gcmr.errors import ArtifactError, ConfigError, GcmrError
from gcmr.search import load_searcher
from gcmr.search.retriever import Retriever
from gcmr.train import TrainConfig, train

TINY_MODEL = {"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 2, "decoder_layers": 2,
              "dropout": 0.1}


def tiny_train_config(**changes) -> TrainConfig:
    base = dict(epochs=2, batch_size=16, lr=3e-3, vocab_size=200, val_split="test",
                max_val_queries=20, val_beam=5, warmup_epochs=0.5)
    base.update(changes)
    return TrainConfig(**base)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_tensors(path)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_writes_model_and_is_deterministic(tiny_index: Path, tmp_path: Path) -> None:
    config = tiny_train_config()
    r1 = train(tiny_index, tmp_path / "m1", config=config, model_options=TINY_MODEL,
               show_progress=False)
    train(tiny_index, tmp_path / "m2", config=config, model_options=TINY_MODEL,
               show_progress=False)
    assert r1.epochs_run == 2 and r1.num_pairs == 40 * 2 + 20
    for name in ("manifest.json", "tokenizer.json", "model.safetensors", "train_log.jsonl",
                 "checkpoint/model.safetensors", "checkpoint/optimizer.safetensors"):
        assert (tmp_path / "m1" / name).is_file(), name
    manifest = json.loads((tmp_path / "m1" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["loss"]["omega"] == 0.15
    log = [json.loads(line) for line in (tmp_path / "m1" / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and "R@1" in log[0]["val"]
    assert _same(_weights(tmp_path / "m1" / "checkpoint" / "model.safetensors"),
                 _weights(tmp_path / "m2" / "checkpoint" / "model.safetensors"))


def test_resume_equals_uninterrupted(tiny_index: Path, tmp_path: Path) -> None:
    full = tiny_train_config(epochs=3)
    train(tiny_index, tmp_path / "full", config=full, model_options=TINY_MODEL,
          show_progress=False)
    # the interrupted run stops after its first epoch (7 steps of 16 of the 100 pairs)
    train(tiny_index, tmp_path / "part", config=tiny_train_config(epochs=3, max_steps=7),
          model_options=TINY_MODEL, show_progress=False)
    assert len((tmp_path / "part" / "train_log.jsonl").read_text().splitlines()) == 1
    train(tiny_index, tmp_path / "part", config=full, resume=True, show_progress=False)
    a = _weights(tmp_path / "full" / "checkpoint" / "model.safetensors")
    b = _weights(tmp_path / "part" / "checkpoint" / "model.safetensors")
    assert _same(a, b)
    log = (tmp_path / "part" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]


def test_resume_refuses_changed_settings(tiny_index: Path, tmp_path: Path) -> None:
    train(tiny_index, tmp_path / "m", config=tiny_train_config(epochs=1), model_options=TINY_MODEL,
          show_progress=False)
    with pytest.raises(ConfigError, match=r"cannot resume with different settings \['lr'\]"):
        train(tiny_index, tmp_path / "m", config=tiny_train_config(epochs=2, lr=1e-2),
              resume=True, show_progress=False)
    with pytest.raises(ArtifactError, match="already exists"):
        train(tiny_index, tmp_path / "m", config=tiny_train_config(), show_progress=False)


def test_corrupted_checkpoint_and_weights(tiny_index: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    train(tiny_index, out, config=tiny_train_config(epochs=1), model_options=TINY_MODEL,
          show_progress=False)
    (out / "checkpoint" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="corrupted weights file"):
        train(tiny_index, out, config=tiny_train_config(epochs=2), resume=True, show_progress=False)
    (out / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ArtifactError, match="model.safetensors: checksum mismatch"):
        Retriever.load(out)
    (out / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing weights"):
        Retriever.load(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupted manifest"):
        load_searcher(out)
    with pytest.raises(ArtifactError, match="no checkpoint|missing manifest|corrupted"):
        train(tiny_index, tmp_path / "nothing", config=tiny_train_config(), resume=True,
              show_progress=False)


def test_refuses_index_of_another_corpus(tiny_index: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    emb = np.load(tiny_corpus / "embeddings.npy")
    emb[0] = -emb[0]
    np.save(tiny_corpus / "embeddings.npy", emb)
    with pytest.raises(ArtifactError, match="fingerprint"):
        train(tiny_index, tmp_path / "m", config=tiny_train_config(), show_progress=False)


def test_retriever_search_contract(tiny_index: Path, tmp_path: Path) -> None:
    train(tiny_index, tmp_path / "m", config=tiny_train_config(), model_options=TINY_MODEL,
          show_progress=False)
    retriever = Retriever.load(tmp_path / "m")
    scores, ids = retriever.search(["red item 3", "gold item 7"], k=5, beam=5)
    assert scores.shape == (2, 5) and ids.shape == (2, 5)
    for row in ids:
        assert len(set(row)) == 5 and all(i.startswith("item") for i in row)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    # k > beam: the beam widens to k, so k distinct items still come back
    _, ids = retriever.search("blue", k=12, beam=3)
    assert len(set(ids[0])) == 12
    # more than the number of items: padded with ""
    _, ids = retriever.search("blue", k=45)
    assert (ids[0] == "").sum() == 5
    with pytest.raises(GcmrError, match="empty"):
        retriever.search(["fine", "  "])
    # restricted candidate pool
    _, rows = retriever.search_rows(["red"], k=3, candidates=np.array([1, 5, 9, 13]))
    assert set(rows[0]) <= {1, 5, 9, 13}


def test_cli_train_search_eval(tiny_index: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m"
    argv = ["train", str(tiny_index), str(out), "--epochs", "1", "--batch-size", "16",
            "--vocab-size", "200", "--d-model", "32", "--heads", "2", "--ffn", "64",
            "--encoder-layers", "1", "--decoder-layers", "1", "--val-split", "test",
            "--quiet"]
    assert main(argv) == 0
    assert main(argv) == 2  # exists already
    assert "already exists" in capsys.readouterr().err
    assert main(["search", str(out), "red item 3", "-k", "3", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["query"] == "red item 3" and len(lines[0]["results"]) == 3
    assert lines[0]["results"][0]["caption"]
    assert main(["eval", str(out), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["queries"] == 20 and set(result["metrics"]) == {"R@1", "R@5", "R@10", "MRR@10"}
    assert (out / "eval_test.json").is_file()
    assert main(["eval", str(out), "--split", "nope"]) == 2
    assert "no query split 'nope'" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "missing"), "x"]) == 2


def test_t5_backbone_through_trainer_and_retriever(tiny_index: Path, tiny_t5_dir: Path,
                                                   tmp_path: Path) -> None:
    config = tiny_train_config(epochs=1, method="avg", backbone=f"t5:{tiny_t5_dir}", dis_beam=3)
    result = train(tiny_index, tmp_path / "t5m", config=config, show_progress=False)
    manifest = json.loads((tmp_path / "t5m" / "manifest.json").read_text())
    assert manifest["backbone"] == "t5" and manifest["loss"]["omega"] == 0.0
    assert result.epochs_run == 1
    retriever = Retriever.load(tmp_path / "t5m")
    assert type(retriever.model).__name__ == "T5Backbone"
    _, ids = retriever.search(["the red dog"], k=4)
    assert len(set(ids[0])) == 4
    with pytest.raises(ConfigError, match="do not apply to a pretrained T5"):
        train(tiny_index, tmp_path / "bad", config=config, model_options=TINY_MODEL,
              show_progress=False)
    with pytest.raises(ConfigError, match="backbone must be"):
        tiny_train_config(backbone="bert:x")
