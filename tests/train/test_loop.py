"""The one training loop (gcmr.train.loop): --overwrite never loses the old model, interrupted
replacements resume, runs that died early restart, and the dense tower trains, resumes and
selects weights through the same loop as the generative model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gcmr.artifacts import load_tensors
from gcmr.corpus import load_corpus
from gcmr.errors import ArtifactError, ConfigError
from gcmr.ids import IndexConfig, build_index
from gcmr.search import load_searcher
from gcmr.train import TrainConfig, losses, train
from gcmr.train.dense import train_dense
from gcmr.train.loop import staging_path

TINY_MODEL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "encoder_layers": 1, "decoder_layers": 1}
TINY_TOWER = {k: v for k, v in TINY_MODEL.items() if k != "decoder_layers"}
QUERIES = ["red item 3", "gold item 7"]


def config(**changes) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "vocab_size": 120, "val_split": "test",
            "max_val_queries": 10, "val_beam": 3, "warmup_epochs": 0.5}
    base.update(changes)
    return TrainConfig(**base)


@pytest.fixture
def tiny_index(tiny_corpus: Path, tmp_path: Path) -> Path:
    corpus = load_corpus(tiny_corpus)
    cfg = IndexConfig(num_clusters=4, codebook_size=4, latent_dim=8, hidden_dims=[16], epochs=1,
                      max_steps=5, batch_size=16)
    return build_index(corpus, cfg, show_progress=False).save(tmp_path / "index")


def _fail_after(monkeypatch, name: str, calls: int) -> None:
    """Make loss ``name`` of gcmr.train.losses return NaN from its ``calls``-th call on, so
    the run diverges there (the loop stops it with a ConfigError)."""
    real = getattr(losses, name)
    count = {"n": 0}

    def wrapped(*args, **kwargs):
        count["n"] += 1
        out = real(*args, **kwargs)
        if count["n"] < calls:
            return out
        loss = out[0] if isinstance(out, tuple) else out
        nan = loss * float("nan")
        return (nan, out[1]) if isinstance(out, tuple) else nan

    monkeypatch.setattr(losses, name, wrapped)


def _search(model_dir: Path):
    scores, ids = load_searcher(model_dir, device="cpu").search(QUERIES, k=3)
    return scores.tolist(), ids.tolist()


def _trainers(tiny_index: Path, tiny_corpus: Path):
    """(name, loss function name, train(out, config, **kw)) for both kinds of model."""
    return [
        ("generative", "cart_loss",
         lambda out, cfg, **kw: train(tiny_index, out, config=cfg, model_options=TINY_MODEL,
                                      show_progress=False, **kw)),
        ("dense", "info_nce",
         lambda out, cfg, **kw: train_dense(tiny_corpus, out, config=cfg,
                                            tower_options=TINY_TOWER, show_progress=False,
                                            **kw)),
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["generative", "dense"])
def test_overwrite_that_fails_midway_keeps_the_old_model(which: int, tiny_index: Path,
                                                         tiny_corpus: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    _, loss_name, run = _trainers(tiny_index, tiny_corpus)[which]
    out = tmp_path / "m"
    run(out, config(epochs=1))
    before = _search(out)
    weights = load_tensors(out / "model.safetensors")
    # 100 pairs at batch 16 = 7 steps per epoch: fail in epoch 2, after a checkpoint exists
    _fail_after(monkeypatch, loss_name, 10)
    with pytest.raises(ConfigError, match="diverged"):
        run(out, config(epochs=3, seed=1), overwrite=True)
    after = load_tensors(out / "model.safetensors")
    assert all(torch.equal(weights[k], after[k]) for k in weights)
    assert _search(out) == before
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    # the failed replacement kept its checkpoint aside, never in place of the old model
    assert (staging_path(out) / "checkpoint" / "state.json").is_file()
    # failing before any checkpoint leaves nothing behind
    monkeypatch.undo()
    _fail_after(monkeypatch, loss_name, 2)
    with pytest.raises(ConfigError, match="diverged"):
        run(out, config(epochs=3, seed=1), overwrite=True)
    assert not staging_path(out).exists() and _search(out) == before


@pytest.mark.parametrize("which", [0, 1], ids=["generative", "dense"])
def test_interrupted_overwrite_resumes_to_the_uninterrupted_result(which: int, tiny_index: Path,
                                                                   tiny_corpus: Path,
                                                                   tmp_path: Path) -> None:
    _, _, run = _trainers(tiny_index, tiny_corpus)[which]
    full = config(epochs=3, seed=2)
    run(tmp_path / "ref", full)
    out = tmp_path / "m"
    run(out, config(epochs=1))
    old = _search(out)
    # the replacement stops after its first epoch (max_steps) as if killed, then resumes
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("gcmr.train.loop.replace_dir",
                   lambda new, final: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            run(out, config(epochs=3, seed=2, max_steps=7), overwrite=True)
    assert _search(out) == old  # still the old model
    run(out, full, resume=True)
    assert not staging_path(out).exists()
    a = load_tensors(tmp_path / "ref" / "checkpoint" / "model.safetensors")
    b = load_tensors(out / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]


def test_a_run_that_died_in_its_first_epoch_restarts(tiny_index: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "tokenizer.json").write_text("{}")  # all a run leaves when killed before a manifest
    train(tiny_index, out, config=config(epochs=1), model_options=TINY_MODEL, resume=True,
          show_progress=False)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    (out / "checkpoint" / "state.json").unlink()  # killed again, before its first checkpoint
    train(tiny_index, out, config=config(epochs=1), model_options=TINY_MODEL, overwrite=True,
          show_progress=False)
    assert (out / "checkpoint" / "state.json").is_file()


def test_overwrite_refuses_what_is_not_a_model(tiny_index: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(ArtifactError, match="not a gcmr model directory"):
        train(tiny_index, out, config=config(epochs=1), overwrite=True, show_progress=False)
    with pytest.raises(ArtifactError, match="not a gcmr model directory"):
        train_dense(tmp_path / "index", out, config=config(epochs=1), overwrite=True,
                    show_progress=False)
    assert (out / "thesis.tex").read_text() == "years of work"
    with pytest.raises(ConfigError, match="exclude each other"):
        train(tiny_index, tmp_path / "m", config=config(), resume=True, overwrite=True,
              show_progress=False)


def test_dense_tower_uses_the_loop(tiny_corpus: Path, tmp_path: Path) -> None:
    result = train_dense(tiny_corpus, tmp_path / "d", config=config(epochs=2, patience=1),
                         tower_options=TINY_TOWER, show_progress=False)
    out = tmp_path / "d"
    for name in ("manifest.json", "tokenizer.json", "model.safetensors", "train_log.jsonl",
                 "checkpoint/model.safetensors", "checkpoint/optimizer.safetensors"):
        assert (out / name).is_file(), name
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert {"loss", "temperature", "lr", "pairs_per_s", "val"} <= set(log[0])
    assert result.best_epoch in (1, 2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["best_epoch"] == result.best_epoch
    # the selected weights are the best epoch's: searching with them reproduces its metric
    from gcmr.evaluate.runner import evaluate

    got = evaluate(load_searcher(out, device="cpu"), load_corpus(tiny_corpus), "test", k=10,
                   max_queries=10)["metrics"]
    assert np.isclose(got["MRR@10"], manifest["best_metrics"]["MRR@10"], atol=1e-4)


def test_an_interrupted_checkpoint_swap_is_rolled_back(tmp_path) -> None:
    """Killed between the two renames of a checkpoint replace (the fallback swap): the old
    checkpoint sits in a hidden .old directory; resuming puts it back instead of starting
    over (and losing it)."""
    from gcmr.train.checkpoint import CHECKPOINT
    from gcmr.train.loop import _has_checkpoint

    run = tmp_path / "model"
    (run / CHECKPOINT).mkdir(parents=True)
    (run / CHECKPOINT / "state.json").write_text("{}")
    (run / CHECKPOINT).rename(run / f".{CHECKPOINT}.old-abc123")
    assert not (run / CHECKPOINT).exists()
    assert _has_checkpoint(run)
    assert (run / CHECKPOINT / "state.json").is_file()
    assert not list(run.glob(f".{CHECKPOINT}.old-*"))


@pytest.mark.real_defaults
def test_a_small_corpus_trains_at_least_min_steps() -> None:
    """Epochs of a small corpus pass over its pairs several times, so that training takes at
    least min_steps optimizer steps; a corpus above the floor keeps one pass per epoch."""
    from gcmr.train.loop import passes_per_epoch, schedule_for

    cfg = TrainConfig(epochs=4, batch_size=256)
    assert cfg.resolved_min_steps == 200
    for pairs in (1, 100, 480, 5000):
        passes = passes_per_epoch(cfg, pairs)
        steps = cfg.epochs * (-(-pairs * passes // 256))
        assert 200 <= steps <= 204 + cfg.epochs * (-(-pairs // 256))  # the floor, not far above
        assert schedule_for(cfg, pairs)["total_steps"] == steps
    assert passes_per_epoch(cfg, 30_000) == 1  # 472 steps: above the floor
    assert passes_per_epoch(cfg.replace(min_steps=0), 480) == 1
    with pytest.raises(ConfigError, match="min_steps"):
        TrainConfig(min_steps=-1)
