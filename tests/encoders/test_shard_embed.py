"""Sharded embedding and captioning: ``--shard I/N`` jobs leave their chunks and a merge writes
what one process writes; under torchrun the ranks share the chunks and rank 0 merges."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import media_fixtures as mf
import numpy as np
import pytest

from gcmr.cli import main
from gcmr.corpus import load_corpus
from gcmr.encoders.resumable import ChunkedJob, Shard
from gcmr.errors import ConfigError, GcmrError


@pytest.fixture
def pics(tmp_path):
    root = tmp_path / "pics"
    for i in range(9):
        mf.write_image(root / f"p{i}.png", seed=20 + i)
    return root


def _embed(*args: str) -> int:
    return main(["embed", *map(str, args), "--no-progress", "--json"])


def test_shard_parse_and_ownership():
    assert Shard.parse("1/4") == Shard(1, 4) and str(Shard.parse(" 0 / 2 ")) == "0/2"
    for bad, message in (("3/2", "I must be in 0..1"), ("0/0", "N must be >= 1"),
                         ("a/2", "expected I/N"), ("1", "expected I/N"), ("-1/2", "expected")):
        with pytest.raises(ConfigError, match=message):
            Shard.parse(bad)
    shard = Shard(1, 3)
    assert [c for c in range(7) if shard.owns(c)] == [1, 4]
    assert not shard.merges and Shard().merges and Shard(0, 2, ranks=True).merges


def test_shard_flag_is_validated_at_the_cli(pics, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _embed(pics, "--encoder", "efficientnet-lite0", "--out", tmp_path / "e.npy",
               "--shard", "3/2")
    assert "argument --shard: 3/2: I must be in 0..1" in capsys.readouterr().err
    assert _embed(pics, "--encoder", "efficientnet-lite0", "--out", tmp_path / "e.npy",
                  "--shard", "0/2", "--merge") == 2
    assert "--merge writes the result of all shards; drop --shard" in capsys.readouterr().err


def test_two_shard_jobs_then_merge_equal_one_process(pics, tmp_path, clip_dir, capsys):
    enc = ["--encoder", f"hf-clip:{clip_dir}", "--chunk-size", "2", "--batch-size", "2"]
    one = tmp_path / "one.npy"
    assert _embed(pics, *enc, "--out", one) == 0
    capsys.readouterr()

    out = tmp_path / "sharded.npy"
    assert _embed(pics, *enc, "--out", out, "--shard", "1/2") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["merged"] is False and summary["shard"] == "1/2"
    # 5 chunks of 2 items: shard 1 owns chunks 1 and 3
    assert summary["shard_chunks"] == 2 and summary["shard_items"] == 4
    assert summary["chunks_missing"] == 3 and not out.exists()
    partial = tmp_path / "sharded.npy.partial"
    assert sorted(p.name for p in partial.glob("chunk_*.npy")) == \
        ["chunk_000001.npy", "chunk_000003.npy"]

    # a merge before shard 0 finished names what is missing and writes nothing
    assert _embed(pics, *enc, "--out", out, "--merge") == 2
    assert "3 of 5 chunks are not finished (chunk 0, 2, 4)" in capsys.readouterr().err
    assert not out.exists()

    assert _embed(pics, *enc, "--out", out, "--shard", "0/2") == 0
    # --restart of one shard drops its own chunks only, not the other shard's
    assert _embed(pics, *enc, "--out", out, "--shard", "0/2", "--restart") == 0
    assert len(list(partial.glob("chunk_*.npy"))) == 5
    capsys.readouterr()
    assert _embed(pics, *enc, "--out", out, "--merge") == 0
    assert json.loads(capsys.readouterr().out)["items"] == 9
    np.testing.assert_array_equal(np.load(out), np.load(one))
    assert (tmp_path / "sharded.ids.txt").read_text() == (tmp_path / "one.ids.txt").read_text()
    assert not partial.exists()


def test_a_shard_refuses_a_partial_of_another_job(tmp_path):
    ChunkedJob(tmp_path / "j.partial", job={"encoder": "a"}, keys=["x", "y"], chunk_size=1)
    with pytest.raises(GcmrError, match="different job"):
        ChunkedJob(tmp_path / "j.partial", job={"encoder": "b"}, keys=["x", "y"], chunk_size=1,
                   restart=True, shard=Shard(0, 2))  # a shard never deletes the others' work


def test_sharded_captions_equal_one_process(tmp_path, git_dir, pics, capsys):
    from gcmr.corpus import write_corpus

    ids = [f"p{i}" for i in range(9)]
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(9, 4)).astype(np.float32)

    def corpus(name):
        return write_corpus(tmp_path / name, ids=ids, captions=[[] for _ in ids],
                            embeddings=emb, sources=[f"p{i}.png" for i in range(9)],
                            name=name, modality="image")

    args = ["--captioner", str(git_dir), "--num-captions", "2", "--max-new-tokens", "4",
            "--sample", "--chunk-size", "2", "--batch-size", "2", "--media-root", str(pics),
            "--no-progress", "--json"]
    one, two = corpus("one"), corpus("two")
    assert main(["caption", str(one), *args]) == 0
    for i in range(3):
        assert main(["caption", str(two), *args, "--shard", f"{i}/3"]) == 0
    assert load_corpus(two).captions == [[] for _ in ids]  # nothing merged yet
    assert main(["caption", str(two), *args]) == 0  # the merge: a run without --shard
    assert load_corpus(two).captions == load_corpus(one).captions
    assert any(load_corpus(two).captions)
    assert not list(tmp_path.glob(".two.*"))


@pytest.mark.slow
def test_torchrun_two_ranks_embed_a_corpus_like_one_process(tmp_path, pics, clip_dir):
    from gcmr.corpus import write_corpus

    ids = [f"p{i}" for i in range(9)]
    corpus = write_corpus(tmp_path / "corpus", ids=ids, captions=[["x"] for _ in ids],
                          embeddings=np.ones((9, 4), np.float32),
                          sources=[f"p{i}.png" for i in range(9)], name="c", modality="image")
    args = ["embed", str(corpus), "--encoder", f"hf-clip:{clip_dir}", "--chunk-size", "2",
            "--batch-size", "2", "--media-root", str(pics), "--no-progress", "--json"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "gcmr", *args,
                           "--out", str(tmp_path / "two")],
                          check=False, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # rank 0 alone prints
    assert summary["ranks"] == 2 and summary["items"] == 9
    np.testing.assert_array_equal(np.asarray(load_corpus(tmp_path / "two").embeddings),
                                  np.asarray(load_corpus(tmp_path / "one").embeddings))
    assert not list(tmp_path.glob(".corpus.*"))  # the shared chunks are gone after the merge
