"""Scaling out training: torchrun DDP over 2 CPU ranks (gloo) trains the weights one process
trains with the same global batch, for every method of the one loop (CART, AVG with L_dis,
the dense tower), rank 0 alone writes, a checkpoint resumes on another number of ranks; ``grad_accum`` K x batch B/K equals batch B; the step plan shares every micro-batch
among the ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gcmr.cli import main
from gcmr.errors import ConfigError
from gcmr.runtime import World, world
from gcmr.train import TrainConfig, train
from gcmr.train.distributed import plan_step, split_sizes
from gcmr.train.loop import check_resumable

# a tiny model; dropout 0 so that one and two ranks draw no different dropout masks
TINY = ["--preset", "none", "--d-model", "32", "--heads", "2", "--ffn", "64",
        "--encoder-layers", "1", "--decoder-layers", "1", "--vocab-size", "200",
        "--dropout", "0", "--device", "cpu", "--threads", "1", "--min-steps", "0", "--quiet"]

# runs gcmr's CLI; an audit hook records every write of the rank under $WATCH
LAUNCHER = '''
import json, os, sys
rank = os.environ.get("RANK", "0")
watch = os.environ["WATCH"]
writes = []
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, os.PathLike)):
        path, mode, flags = str(args[0]), args[1] or "", args[2] or 0
        if path.startswith(watch) and (any(c in str(mode) for c in "wax+") or flags & WRITE):
            writes.append(["open", path])
    elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree"):
        if args and str(args[0]).startswith(watch):
            writes.append([event, str(args[0])])

sys.addaudithook(hook)
from gcmr.cli import main
code = main(sys.argv[1:])
with open(os.environ["REPORT"] + "." + rank, "w") as fh:
    json.dump(writes, fh)
sys.exit(code)
'''


def _torchrun(tmp_path: Path, nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WATCH": str(tmp_path / "runs"),
           "REPORT": str(tmp_path / "writes")}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", str(nproc), str(launcher), *args],
                          check=False, capture_output=True, text=True, env=env,
                          timeout=300)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _diff(a: dict, b: dict) -> dict[str, float]:
    """Max abs difference over the weight matrices, over every tensor, and the relative L2."""
    assert a.keys() == b.keys()
    num = sum(float(((a[k] - b[k]).double() ** 2).sum()) for k in a) ** 0.5
    den = sum(float((a[k].double() ** 2).sum()) for k in a) ** 0.5
    return {"matrices": max(float((a[k] - b[k]).abs().max()) for k in a if a[k].dim() >= 2),
            "all": max(float((a[k] - b[k]).abs().max()) for k in a), "relative": num / den}


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_ranks_train_what_one_process_trains(tiny_index, tmp_path):
    # 100 pairs, steps of 3 x 2 = 6: the last step (4 pairs) has a micro-batch of 1, where
    # rank 1 has nothing; the others split 2/1 (uneven scales); CART + the InfoNCE head
    # (in-batch negatives gathered over the ranks), validation on rank 0
    flags = [*TINY, "--batch-size", "3", "--grad-accum", "2", "--val-split", "test"]
    runs = tmp_path / "runs"
    one = runs / "one"
    assert main(["train", str(tiny_index), str(one), *flags, "--epochs", "1"]) == 0
    one_epoch1 = _weights(one / "checkpoint" / "model.safetensors")

    two = runs / "two"
    done = _torchrun(tmp_path, 2, ["train", str(tiny_index), str(two), *flags, "--epochs", "1"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("training finished") == 1  # rank 0 alone prints
    diff = _diff(one_epoch1, _weights(two / "checkpoint" / "model.safetensors"))
    # float summation order only; per-rank negatives (no gather) give 1e-2 here
    assert diff["matrices"] < 1e-4 and diff["relative"] < 1e-3, diff
    (log_one,), (log_two,) = _log(one), _log(two)
    assert log_two["ranks"] == 2 and log_two["pairs"] == log_one["pairs"] == 100
    for key in ("loss", "ce", "nce"):
        assert log_two[key] == pytest.approx(log_one[key], abs=1e-4)
    assert log_two["val"]["R@10"] == log_one["val"]["R@10"]
    # rank 0 alone wrote the model directory
    assert json.loads((tmp_path / "writes.1").read_text()) == []
    written = {Path(p).name for _, p in json.loads((tmp_path / "writes.0").read_text())}
    assert {"two", "train_log.jsonl"} <= written  # the hook sees rank 0's writes
    assert {p.name for p in two.iterdir()} == {p.name for p in one.iterdir()}
    assert json.loads((two / "manifest.json").read_text())["status"] == "complete"

    # the checkpoint holds global state: the 2-rank run resumes in one process
    assert main(["train", str(tiny_index), str(two), *flags, "--epochs", "2", "--resume"]) == 0
    assert main(["train", str(tiny_index), str(one), *flags, "--epochs", "2", "--resume"]) == 0
    diff = _diff(_weights(one / "checkpoint" / "model.safetensors"),
                 _weights(two / "checkpoint" / "model.safetensors"))
    assert diff["matrices"] < 1e-4 and diff["relative"] < 1e-3, diff
    assert [r.get("ranks", 1) for r in _log(two)] == [2, 1]



@pytest.fixture
def avg_index(corpus_factory, tmp_path: Path) -> Path:
    """An AVG index (voken codebooks of 4, 2 steps + the unique level) of a tiny corpus with
    caption embeddings, as in test_avg_training.py."""
    import numpy as np

    from gcmr.corpus import load_corpus
    from gcmr.ids import IndexConfig, build_index

    corpus_dir = corpus_factory("avgc", caption_embeddings=np.random.default_rng(1).normal(
        size=(40, 12)))
    config = IndexConfig(scheme="avg", voken_codebook_size=4, voken_length=2, latent_dim=8,
                         hidden_dims=[16], epochs=2, max_steps=10, batch_size=16,
                         init_kmeans_rows=40, shared_codebook=True)
    return build_index(load_corpus(corpus_dir), config, show_progress=False).save(
        tmp_path / "avg-index")


def _writes_of(tmp_path: Path) -> tuple[list, set[str]]:
    """Rank 1's writes under $WATCH and the names rank 0 wrote."""
    return (json.loads((tmp_path / "writes.1").read_text()),
            {Path(p).name for _, p in json.loads((tmp_path / "writes.0").read_text())})


@pytest.mark.slow
def test_two_ranks_train_avg_with_l_dis_as_one_process(avg_index, tmp_path):
    # AVG: epoch 1 L_gen alone, epoch 2 L_gen + L_dis over beam-searched candidates (beam 3,
    # searched by the unwrapped model on each rank's slice); steps of 5 x 2 = 10 pairs, every
    # micro-batch split 3/2; validation (beam search) on rank 0
    flags = [*TINY, "--method", "avg", "--epochs", "2", "--dis-epochs", "1", "--dis-beam", "3",
             "--batch-size", "5", "--grad-accum", "2", "--val-split", "test",
             "--max-val-queries", "10"]
    runs = tmp_path / "runs"
    one, two = runs / "one", runs / "two"
    assert main(["train", str(avg_index), str(one), *flags]) == 0
    done = _torchrun(tmp_path, 2, ["train", str(avg_index), str(two), *flags])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("training finished") == 1
    weights = _weights(one / "checkpoint" / "model.safetensors")
    diff = _diff(weights, _weights(two / "checkpoint" / "model.safetensors"))
    # matrices agree to ~1e-7; "all" is larger only for the attention key biases, whose true
    # gradient is 0 (softmax is shift-invariant) and which AdamW moves by rounding noise
    assert diff["matrices"] < 1e-4 and diff["relative"] < 1e-3, diff
    # the comparison can tell L_dis apart (5e-3 without it)
    assert main(["train", str(avg_index), str(runs / "gen"), *flags, "--dis-weight", "0"]) == 0
    assert _diff(weights, _weights(runs / "gen" / "checkpoint" / "model.safetensors"))[
        "matrices"] > 1e-3
    log_one, log_two = _log(one), _log(two)
    assert [r["ranks"] for r in log_two] == [2, 2]
    assert ["dis" in r for r in log_two] == ["dis" in r for r in log_one] == [False, True]
    for r1, r2 in zip(log_one, log_two):
        assert r2["pairs"] == r1["pairs"] == 100
        for key in ("loss", "ce", "dis", "dis_inserted", "dis_pos_prob"):
            if key in r1:
                assert r2[key] == pytest.approx(r1[key], abs=1e-4), key
        assert r2["val"] == r1["val"]
    assert json.loads((two / "manifest.json").read_text())["method"] == "avg"
    rank1, rank0 = _writes_of(tmp_path)
    assert rank1 == [] and {"two", "train_log.jsonl"} <= rank0
    assert {p.name for p in two.iterdir()} == {p.name for p in one.iterdir()}


# the dense tower's flags: the query encoder's (no decoder), dropout 0
DENSE = ["--preset", "none", "--d-model", "32", "--heads", "2", "--ffn", "64",
         "--encoder-layers", "1", "--vocab-size", "200", "--dropout", "0", "--device", "cpu",
         "--threads", "1", "--min-steps", "0", "--quiet"]


@pytest.mark.slow
def test_two_ranks_train_the_dense_tower_as_one_process(tiny_corpus, tmp_path):
    # gcmr train-dense runs the same loop: InfoNCE with in-batch negatives gathered over the
    # ranks and the learned temperature; steps of 3 x 2 (a last micro-batch of 1 pair, where
    # rank 1 has nothing), validation on rank 0
    flags = [*DENSE, "--epochs", "2", "--batch-size", "3", "--grad-accum", "2",
             "--val-split", "test"]
    runs = tmp_path / "runs"
    one, two = runs / "one", runs / "two"
    assert main(["train-dense", str(tiny_corpus), str(one), *flags]) == 0
    done = _torchrun(tmp_path, 2, ["train-dense", str(tiny_corpus), str(two), *flags])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("dense training finished") == 1
    diff = _diff(_weights(one / "checkpoint" / "model.safetensors"),
                 _weights(two / "checkpoint" / "model.safetensors"))
    # ~1e-7 (key biases aside, see above); per-rank negatives (no gather) give 1e-2 here
    assert diff["matrices"] < 1e-4 and diff["relative"] < 1e-3, diff
    log_one, log_two = _log(one), _log(two)
    assert [r["ranks"] for r in log_two] == [2, 2]
    for r1, r2 in zip(log_one, log_two):
        assert r2["pairs"] == r1["pairs"] == 100
        assert r2["loss"] == pytest.approx(r1["loss"], abs=1e-4)
        assert r2["temperature"] == pytest.approx(r1["temperature"], abs=1e-5)
        assert r2["val"] == r1["val"]
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["format"].startswith("gcmr-dense")
    rank1, rank0 = _writes_of(tmp_path)
    assert rank1 == [] and {"two", "train_log.jsonl"} <= rank0
    assert {p.name for p in two.iterdir()} == {p.name for p in one.iterdir()}


def _train(index: Path, out: Path, **fields) -> dict[str, torch.Tensor]:
    config = TrainConfig(**{"epochs": 2, "dense_weight": 0.0, "val_split": None, "seed": 3,
                            "vocab_size": 200, "device": "cpu", **fields})
    train(index, out, config=config, show_progress=False,
          model_options={"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 1,
                         "decoder_layers": 1, "dropout": 0.0})
    return _weights(out / "model.safetensors")


def test_grad_accum_k_micro_batches_equal_one_batch(tiny_index, tmp_path):
    big = _train(tiny_index, tmp_path / "big", batch_size=12)
    accum = _train(tiny_index, tmp_path / "accum", batch_size=4, grad_accum=3)
    small = _train(tiny_index, tmp_path / "small", batch_size=4)
    assert _diff(big, accum)["matrices"] < 1e-5
    assert _diff(big, small)["matrices"] > 1e-3  # the comparison can tell batches apart
    log_big, log_accum = _log(tmp_path / "big"), _log(tmp_path / "accum")
    assert [r["step"] for r in log_accum] == [r["step"] for r in log_big] == [9, 18]
    assert log_accum[-1]["loss"] == pytest.approx(log_big[-1]["loss"], abs=1e-5)


def test_grad_accum_is_validated_and_part_of_the_run(tmp_path, capsys):
    with pytest.raises(ConfigError, match="grad_accum must be >= 1"):
        TrainConfig(grad_accum=0)
    with pytest.raises(SystemExit):
        main(["train", "index", str(tmp_path / "m"), "--grad-accum", "0"])
    assert "argument --grad-accum" in capsys.readouterr().err
    config = TrainConfig(grad_accum=2)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    # a run recorded before the field existed had grad_accum 1: it resumes, a change is refused
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "grad_accum"}
    check_resumable({"train_config": old}, TrainConfig(), tmp_path)
    with pytest.raises(ConfigError, match="grad_accum"):
        check_resumable({"train_config": old}, config, tmp_path)


def test_the_step_plan_shares_each_micro_batch_among_the_ranks():
    assert split_sizes(5, 2) == [3, 2] and split_sizes(1, 3) == [1, 0, 0]
    step = torch.arange(10, 17)  # 7 pairs, micro-batches of 4 and 3, 3 ranks
    plans = [plan_step(step, 4, World(rank, 3)) for rank in range(3)]
    assert [len(p) for p in plans] == [2, 2, 2]
    for j, size in enumerate((4, 3)):
        micros = [p[j] for p in plans]
        assert torch.cat([m.index[:m.pairs] for m in micros]).tolist() == \
            step[4 * j:4 * j + size].tolist()
        # the scales add up to N * b / B: DDP's mean over ranks gives the step's mean
        assert sum(m.scale for m in micros) == pytest.approx(3 * size / 7)
    last = plan_step(torch.arange(5), 4, World(2, 3))[1]  # a micro-batch of 1 pair
    assert last.pairs == 0 and last.scale == 0.0 and last.index.numel() == 1


def test_world_reads_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert world() == World(1, 4, 1) and not world().main and world().distributed
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="inconsistent torchrun environment"):
        world()
    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(ConfigError, match="WORLD_SIZE='x' is not an integer"):
        world()
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key)
    assert world() == World() and world().main


def test_single_process_cli_writes_as_before(tiny_index, tmp_path):
    out = tmp_path / "m"
    assert main(["train", str(tiny_index), str(out), *TINY, "--epochs", "1", "--no-val"]) == 0
    assert "ranks" not in _log(out)[0]
