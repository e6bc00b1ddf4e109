"""Artifacts stay whole and honest (issue 12): crash-safe replacement with recovery of what an
interrupted one leaves (fault injection and real ``kill -9``), sha256 checksums of every weight
and id file refused on mismatch, the corpus fingerprint checked where captions and ids are
read by row, and a warning for a model whose training has not completed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gcmr import artifacts
from gcmr.artifacts import (
    CHECKSUMS,
    ArtifactWarning,
    atomic_dir,
    read_manifest,
    recover,
    sha256_file,
    verify_checksums,
    write_manifest,
)
from gcmr.cli import main
from gcmr.corpus import corpus_fingerprint, load_corpus
from gcmr.errors import ArtifactError, CorpusError
from gcmr.ids import IndexConfig, build_index, load_index
from tests.conftest import make_corpus

FMT = "test-artifact"
TINY_MODEL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "encoder_layers": 1, "decoder_layers": 1}
TINY_TOWER = {k: v for k, v in TINY_MODEL.items() if k != "decoder_layers"}
FAST_INDEX = IndexConfig(num_clusters=4, codebook_size=4, latent_dim=8, hidden_dims=[16],
                         epochs=1, max_steps=5, batch_size=16)


def write_artifact(final: Path, text: str, *, overwrite: bool = True) -> None:
    """A small artifact: ``data.bin`` holding ``text`` and a checksummed manifest."""
    with atomic_dir(final, overwrite=overwrite) as tmp:
        (tmp / "data.bin").write_text(text)
        write_manifest(tmp, fmt=FMT, version=1, checksum_files=["data.bin"], text=text)


def content(final: Path) -> str:
    return read_manifest(final, fmt=FMT)["text"]


def siblings(final: Path) -> list[str]:
    return sorted(os.listdir(final.parent))


class Killed(BaseException):
    """Stands for SIGKILL in-process: once raised, every later rename raises it too, so no
    cleanup or rollback code of the writer gets to run."""


def kill_after_first_rename(mp: pytest.MonkeyPatch, final: Path) -> None:
    """Force the two-rename swap and 'kill' the writer right after its first rename (the
    old ``final`` moved aside, the new one not yet in place)."""
    real = os.replace
    done: list[tuple] = []

    def replace(src, dst):
        if done:
            raise Killed()
        real(src, dst)
        if Path(src) == final:
            done.append((src, dst))

    mp.setattr(artifacts, "_exchange_paths", lambda a, b: False)
    mp.setattr(artifacts.os, "replace", replace)


def interrupted_replace(final: Path) -> Path:
    """Write ``final`` ("old"), then a replacement ("new") killed right after its first
    rename; returns ``final``."""
    write_artifact(final, "old")
    with pytest.MonkeyPatch.context() as mp:
        kill_after_first_rename(mp, final)
        with pytest.raises(Killed):
            write_artifact(final, "new")
    return final


# ----------------------------------------------------------------------------- atomic_dir


def test_atomic_dir_writes_replaces_and_cleans_up(tmp_path: Path) -> None:
    final = tmp_path / "art"
    write_artifact(final, "one", overwrite=False)
    with pytest.raises(ArtifactError, match="already exists"):
        write_artifact(final, "two", overwrite=False)
    write_artifact(final, "two")
    assert content(final) == "two" and siblings(final) == ["art"]
    with pytest.raises(RuntimeError), atomic_dir(final, overwrite=True) as tmp:
        (tmp / "data.bin").write_text("half")
        raise RuntimeError("failed while writing")
    assert content(final) == "two" and siblings(final) == ["art"]


@pytest.mark.skipif(artifacts._renameat2() is None, reason="needs Linux renameat2")
def test_replacement_is_one_atomic_exchange_so_final_never_disappears(tmp_path: Path,
                                                                       monkeypatch) -> None:
    final = tmp_path / "art"
    write_artifact(final, "one")
    moved = []
    real = os.replace

    def replace(src, dst):
        moved.append(Path(src))
        real(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", replace)
    write_artifact(final, "two")
    assert final not in moved  # never renamed away: exchanged in one step
    assert content(final) == "two" and siblings(final) == ["art"]


def test_kill_between_the_two_renames_is_recovered_on_load(tmp_path: Path) -> None:
    final = interrupted_replace(tmp_path / "art")
    # what a kill there leaves: no final path, the old one and the new one hidden beside it
    assert not final.exists()
    names = siblings(final)
    assert any(n.startswith(".art.old-") for n in names)
    assert any(n.startswith(".art.tmp-") for n in names)
    assert content(final) == "old"  # read_manifest recovers: rolled back, never forward
    assert siblings(final) == ["art"]


def test_kill_between_the_two_renames_is_recovered_by_the_next_write(tmp_path: Path) -> None:
    final = interrupted_replace(tmp_path / "art")
    with pytest.raises(ArtifactError, match="already exists"):  # the old one is back
        write_artifact(final, "again", overwrite=False)
    write_artifact(final, "again")
    assert content(final) == "again" and siblings(final) == ["art"]


def test_a_failed_second_rename_puts_the_old_directory_back(tmp_path: Path,
                                                             monkeypatch) -> None:
    final = tmp_path / "art"
    write_artifact(final, "old")
    real = os.replace

    def replace(src, dst):
        if Path(dst) == final and ".tmp-" in Path(src).name:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(artifacts, "_exchange_paths", lambda a, b: False)
    monkeypatch.setattr(artifacts.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        write_artifact(final, "new")
    monkeypatch.undo()
    assert content(final) == "old"
    recover(final)  # the unlocked temporary directory of the failed writer goes
    assert siblings(final) == ["art"]


def test_training_refuses_to_write_over_a_model_whose_swap_was_interrupted(tmp_path: Path):
    """A kill between the renames of a model's replacement, then a plain rerun: the old model
    is put back and the rerun refuses it, instead of training into a fresh directory and
    deleting the hidden old one later."""
    from gcmr.train.loop import refuse_existing

    final = interrupted_replace(tmp_path / "art")
    with pytest.raises(ArtifactError, match="already exists"):
        refuse_existing(final, resume=False, overwrite=False)
    assert content(final) == "old"


def test_recover_keeps_a_live_writers_directory_and_removes_dead_ones(tmp_path: Path) -> None:
    final = tmp_path / "art"
    write_artifact(final, "one")
    dead = tmp_path / ".art.tmp-dead1234"
    live = tmp_path / ".art.tmp-live1234"
    trash = tmp_path / ".art.trash-0123abcd"
    for d in (dead, live, trash):
        d.mkdir()
        (d / "part").write_text("x")
    fd = artifacts._flock(live, blocking=True)  # a writer still at work (holds the lock)
    try:
        recover(final)
        assert siblings(final) == [".art.tmp-live1234", "art"]
    finally:
        if fd is not None:
            os.close(fd)
    recover(final)  # the writer is gone now
    assert siblings(final) == ["art"]


def test_recover_restores_the_newest_old_copy_including_gcmr_0_1_names(tmp_path: Path):
    final = tmp_path / "art"
    for name, text in ((".art.old-1a2b3c4d", "from 0.1"), (f".art.old-{1:x}-00000000", "older"),
                       (f".art.old-{time.time_ns():x}-12345678", "newest")):
        write_artifact(tmp_path / "w", text)
        os.replace(tmp_path / "w", tmp_path / name)
    assert content(final) == "newest" and siblings(final) == ["art"]
    (tmp_path / ".art.old-1a2b3c4d").mkdir()  # a leftover beside a complete final: removed
    recover(final)
    assert content(final) == "newest" and siblings(final) == ["art"]


def test_recover_ignores_other_names_and_missing_parents(tmp_path: Path) -> None:
    final = tmp_path / "art"
    write_artifact(final, "one")
    for name in (".art.partial", ".arty.old-1a2b3c4d", ".art.old-notahexname", "art.old-12"):
        (tmp_path / name).mkdir()
    recover(final)
    assert len(siblings(final)) == 5
    recover(tmp_path / "no" / "such" / "dir")  # nothing to do, no error
    with pytest.raises(ArtifactError, match="no such"):
        read_manifest(tmp_path / "missing", fmt=FMT)


def write_small_corpus(path: Path, *, n: int = 40, seed: int = 0, overwrite: bool = False
                       ) -> Path:
    """A small valid corpus (tests/conftest.py's ``make_corpus``)."""
    return make_corpus(path, n=n, seed=seed, overwrite=overwrite)


def test_a_corpus_overwrite_killed_between_renames_is_recovered_on_load(tmp_path: Path):
    corpus = write_small_corpus(tmp_path / "corpus")
    before = load_corpus(corpus).fingerprint
    with pytest.MonkeyPatch.context() as mp:
        kill_after_first_rename(mp, corpus)
        with pytest.raises(Killed):
            write_small_corpus(corpus, seed=1, overwrite=True)
    assert not corpus.exists()
    assert load_corpus(corpus).fingerprint == before
    assert siblings(corpus) == ["corpus"]


# ----------------------------------------------------------------------------- kill -9


KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from gcmr import artifacts
    from gcmr.ids import load_index
    import gcmr.ids.index as index_module

    out, mode, marker = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    index = load_index(out)
    index.stats["written_by"] = "second"

    def pause():
        marker.write_text("ready")
        time.sleep(120)

    if mode == "between":  # the two-rename swap, killed after moving the old index aside
        artifacts._exchange_paths = lambda a, b: False
        real = os.replace
        def replace(a, b):
            real(a, b)
            if ".old-" in os.fspath(b):
                pause()
        os.replace = replace
    elif mode == "writing":  # killed with half of the new index written
        real_save = index_module.save_tensors
        def save(path, tensors, **kw):
            real_save(path, tensors, **kw)
            pause()
        index_module.save_tensors = save
    elif mode == "exchanged":  # killed right after the atomic exchange
        real_exchange = artifacts._exchange_paths
        def exchange(a, b):
            done = real_exchange(a, b)
            pause()
            return done
        artifacts._exchange_paths = exchange
    index.save(out, overwrite=True)
""")


@pytest.fixture
def saved_index(tmp_path: Path) -> Path:
    corpus = write_small_corpus(tmp_path / "corpus")
    index = build_index(load_corpus(corpus), FAST_INDEX, show_progress=False)
    return index.save(tmp_path / "idx")


def kill_during_save(out: Path, mode: str, tmp_path: Path) -> None:
    """Run the script above in a subprocess and SIGKILL it when it reaches ``mode``'s point."""
    script = tmp_path / "writer.py"
    script.write_text(KILL_SCRIPT)
    marker = tmp_path / f"ready-{mode}"
    proc = subprocess.Popen([sys.executable, str(script), str(out), mode, str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"writer exited early: {proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise AssertionError("writer never reached the kill point")
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no Python cleanup runs
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode,expect", [("between", None), ("writing", None),
                                         ("exchanged", "second")])
def test_kill_9_during_an_index_write_is_recovered(mode: str, expect, saved_index: Path,
                                                   work: Path) -> None:
    if mode == "exchanged" and artifacts._renameat2() is None:
        pytest.skip("needs Linux renameat2")
    before = load_index(saved_index)
    kill_during_save(saved_index, mode, work)
    left = [n for n in siblings(saved_index) if n.startswith(".idx.")]
    assert left, "the kill should have left the writer's hidden directories"
    if mode == "between":
        assert not saved_index.exists()
    after = load_index(saved_index)  # recovers, then verifies every checksum
    assert after.stats.get("written_by") == expect
    np.testing.assert_array_equal(after.codes, before.codes)
    assert after.item_ids == before.item_ids
    assert [n for n in siblings(saved_index) if n.startswith(".idx.")] == []


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


# ----------------------------------------------------------------------------- checksums


def test_manifest_records_sha256_and_verify_refuses_a_modified_file(tmp_path: Path) -> None:
    final = tmp_path / "art"
    write_artifact(final, "payload")
    manifest = read_manifest(final, fmt=FMT)
    assert manifest[CHECKSUMS] == {"data.bin": sha256_file(final / "data.bin")}
    verify_checksums(final, manifest)
    (final / "data.bin").write_text("pAyload")
    with pytest.raises(ArtifactError, match=r"data.bin: checksum mismatch, the file was "
                                            r"modified or corrupted"):
        verify_checksums(final, manifest)
    verify_checksums(final, {k: v for k, v in manifest.items() if k != CHECKSUMS})  # legacy
    (final / "data.bin").unlink()
    verify_checksums(final, manifest)  # a missing file is the loader's to name


def test_index_checksums_cover_the_item_ids(saved_index: Path, tmp_path: Path) -> None:
    manifest = json.loads((saved_index / "manifest.json").read_text())
    assert set(manifest[CHECKSUMS]) == {"ids.npy", "item_ids.json", "trie.safetensors",
                                        "scheme.safetensors"}
    ids = json.loads((saved_index / "item_ids.json").read_text())
    ids[0], ids[1] = ids[1], ids[0]
    (saved_index / "item_ids.json").write_text(json.dumps(ids))
    with pytest.raises(ArtifactError, match="item_ids.json: checksum mismatch"):
        load_index(saved_index)
    assert load_index(saved_index, verify=False).item_ids[:2] == ids[:2]  # --no-verify


def test_legacy_artifacts_have_no_checksums_and_still_load(tmp_path: Path) -> None:
    legacy = Path(__file__).parent / "fixtures" / "legacy_v0_1"
    shutil.copytree(legacy, tmp_path / "legacy")
    for name in ("index", "model", "dense"):
        assert CHECKSUMS not in json.loads((tmp_path / "legacy" / name / "manifest.json")
                                           .read_text())
    from gcmr.search import load_searcher

    expected = json.loads((legacy / "expected.json").read_text())
    searcher = load_searcher(tmp_path / "legacy" / "model", index_path=tmp_path / "legacy" /
                             "index", device="cpu")
    assert searcher.search(expected["queries"], k=3)[1].tolist() == expected["model"]["ids"]


# ----------------------------------------------------------------------------- trained models


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A tiny corpus, index, generative model and dense model (trained once)."""
    from gcmr.train import TrainConfig, train
    from gcmr.train.dense import train_dense

    root = tmp_path_factory.mktemp("models")
    corpus = write_small_corpus(root / "corpus")
    build_index(load_corpus(corpus), FAST_INDEX, show_progress=False).save(root / "index")
    cfg = TrainConfig(epochs=1, batch_size=16, lr=3e-3, vocab_size=120, val_split="test",
                      max_val_queries=10, val_beam=3)
    train(root / "index", root / "model", config=cfg, model_options=TINY_MODEL,
          show_progress=False)
    train_dense(corpus, root / "dense", config=cfg, tower_options=TINY_TOWER,
                show_progress=False)
    return root


@pytest.fixture
def copy(models: Path, tmp_path: Path) -> Path:
    """A private copy of the models' directory; manifests point into it."""
    root = tmp_path / "m"
    shutil.copytree(models, root)
    for name in ("model", "dense"):
        path = root / name / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["corpus"]["path"] = str(root / "corpus")
        if "index" in manifest:
            manifest["index"]["path"] = str(root / "index")
        path.write_text(json.dumps(manifest))
    return root


def flip_byte(path: Path, offset: int = -9) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_model_manifests_record_the_weights_and_tokenizer(copy: Path) -> None:
    for name in ("model", "dense"):
        manifest = json.loads((copy / name / "manifest.json").read_text())
        assert set(manifest[CHECKSUMS]) >= {"model.safetensors", "tokenizer.json"}
        assert manifest[CHECKSUMS]["model.safetensors"] == sha256_file(
            copy / name / "model.safetensors")


@pytest.mark.parametrize("name", ["model", "dense"])
def test_a_flipped_bit_in_the_weights_is_refused(name: str, copy: Path) -> None:
    from gcmr.search import load_searcher

    flip_byte(copy / name / "model.safetensors")
    with pytest.raises(ArtifactError, match="model.safetensors: checksum mismatch, the file "
                                            "was modified or corrupted"):
        load_searcher(copy / name, device="cpu")


def test_cli_refuses_a_modified_file_and_no_verify_skips_the_check(copy: Path, capsys) -> None:
    tok = copy / "model" / "tokenizer.json"
    tok.write_text(json.dumps(json.loads(tok.read_text()), indent=1))  # same tokenizer
    assert main(["search", str(copy / "model"), "red 3", "--json"]) == 2
    assert "tokenizer.json: checksum mismatch" in capsys.readouterr().err
    assert main(["search", str(copy / "model"), "red 3", "--json", "--no-verify"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["results"]
    assert main(["eval", str(copy / "model"), "--json"]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert main(["eval", str(copy / "model"), "--json", "--no-verify"]) == 0


def test_a_model_still_training_is_searched_with_a_warning(copy: Path, capsys) -> None:
    from gcmr.search import load_searcher

    path = copy / "model" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["status"] = "training"
    path.write_text(json.dumps(manifest))
    with pytest.warns(ArtifactWarning, match="training has not completed"):
        load_searcher(copy / "model", device="cpu")
    capsys.readouterr()
    assert main(["search", str(copy / "model"), "red 3", "--json"]) == 0
    err = capsys.readouterr().err  # one line, no Python file:line prefix
    assert "gcmr search: warning: " in err and "training has not completed" in err
    assert ".py:" not in err


# ----------------------------------------------------------------------------- corpus fingerprint


def reorder_items(corpus: Path) -> None:
    lines = (corpus / "items.jsonl").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (corpus / "items.jsonl").write_text("\n".join(lines) + "\n")


def test_corpus_fingerprint_matches_load_corpus(copy: Path) -> None:
    assert corpus_fingerprint(copy / "corpus") == load_corpus(copy / "corpus").fingerprint
    (copy / "corpus" / "embeddings.npy").unlink()
    with pytest.raises(CorpusError, match="embeddings.npy"):
        corpus_fingerprint(copy / "corpus")


@pytest.mark.parametrize("name", ["model", "dense"])
def test_a_corpus_edited_after_training_is_refused_where_captions_are_read(name: str,
                                                                           copy: Path,
                                                                           tmp_path: Path,
                                                                           capsys) -> None:
    from gcmr.search import load_searcher

    original = tmp_path / "original"
    shutil.copytree(copy / "corpus", original)
    reorder_items(copy / "corpus")
    if name == "model" and json.loads((copy / name / "manifest.json").read_text()).get("rerank"):
        # hybrid search reads the corpus's item vectors by row: refused when it loads
        with pytest.raises(ArtifactError, match="has changed since"):
            load_searcher(copy / name, device="cpu")
    # pure generation needs no corpus to search, but the captions shown come from it
    searcher = load_searcher(copy / name, device="cpu",
                             **({"rerank": "none"} if name == "model" else {}))
    with pytest.raises(ArtifactError) as err:
        searcher.item_descriptions()
    message = str(err.value)
    assert str(copy / "corpus") in message and str(copy / name) in message
    assert "retrain" in message.lower() and "--corpus" in message
    if name == "dense":  # its item ids come from the corpus too
        with pytest.raises(ArtifactError, match="has changed since"):
            _ = searcher.item_ids
    assert main(["search", str(copy / name), "red 3"]) == 2
    assert "has changed since" in capsys.readouterr().err
    # the fix the message gives: point to the original corpus
    assert main(["search", str(copy / name), "red 3", "--json", "--corpus", str(original)]) == 0


def test_serve_verifies_on_load_and_no_verify_skips(copy: Path) -> None:
    pytest.importorskip("fastapi")
    from gcmr.cli import build_parser
    from gcmr.serve.app import create_app

    assert build_parser().parse_args(["serve", "M", "--no-verify"]).no_verify is True
    tok = copy / "dense" / "tokenizer.json"
    tok.write_text(json.dumps(json.loads(tok.read_text()), indent=1))  # same tokenizer
    with pytest.raises(ArtifactError, match="tokenizer.json: checksum mismatch"):
        create_app(copy / "dense", device="cpu")
    assert create_app(copy / "dense", device="cpu", verify=False) is not None


# ----------------------------------------------------------------------------- kill -9 of training


TRAIN_KILL_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import torch
    from gcmr import artifacts
    import gcmr.train.loop as loop
    from gcmr.train import TrainConfig, train

    index, out, mode, marker, options = sys.argv[1:6]
    options = json.loads(options)
    torch.set_num_threads(1)
    out = Path(out)

    def pause():
        Path(marker).write_text("ready")
        time.sleep(120)

    real_save = loop.save_checkpoint
    if mode == "first-checkpoint":  # killed in epoch 1, before its checkpoint is written
        def save(*args, **kwargs):
            pause()
        loop.save_checkpoint = save
    elif mode == "after-checkpoint":  # killed mid-training, once epoch 1's checkpoint exists
        def save(*args, **kwargs):
            real_save(*args, **kwargs)
            pause()
        loop.save_checkpoint = save
    elif mode == "between-renames":  # the final swap of --overwrite: old model moved aside
        artifacts._exchange_paths = lambda a, b: False
        real_replace = os.replace
        def replace(a, b):
            real_replace(a, b)
            if Path(b).name.startswith(f".{out.name}.old-"):
                pause()
        os.replace = replace
    train(index, out, config=TrainConfig(**options["config"]),
          model_options=options["model"], show_progress=False,
          overwrite=options["overwrite"])
    sys.exit(3)  # never reached: the test kills the run first
""")
TRAIN_CFG = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "vocab_size": 120, "val_split": None,
             "warmup_epochs": 0.5, "num_threads": 1, "min_steps": 0}  # the subprocess too


def kill_during_training(index: Path, out: Path, mode: str, tmp_path: Path, *,
                         config: dict | None = None, overwrite: bool = False) -> None:
    """Run ``gcmr.train.train`` in a subprocess and SIGKILL it at ``mode``'s point."""
    script = tmp_path / "trainer.py"
    script.write_text(TRAIN_KILL_SCRIPT)
    marker = tmp_path / f"ready-train-{mode}"
    options = json.dumps({"config": config or TRAIN_CFG, "model": TINY_MODEL,
                          "overwrite": overwrite})
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(index), str(out), mode,
                             str(marker), options], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"trainer exited early ({proc.returncode}): "
                                     f"{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("trainer never reached the kill point")
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no Python cleanup, no except/finally of training_dir runs
        assert proc.wait() == -9
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def train_here(index: Path, out: Path, **kwargs):
    from gcmr.train import TrainConfig, train

    return train(index, out, config=TrainConfig(**TRAIN_CFG), model_options=TINY_MODEL,
                 show_progress=False, **kwargs)


def search_ids(model: Path) -> list:
    from gcmr.search import load_searcher

    return load_searcher(model, device="cpu").search(["red 3", "gold 7"], k=3)[1].tolist()


def same_weights(a: Path, b: Path) -> bool:
    from gcmr.artifacts import load_tensors

    x, y = load_tensors(a), load_tensors(b)
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


def epochs_logged(model: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in
            (model / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_kill_9_mid_training_then_resume_gives_the_uninterrupted_model(saved_index: Path,
                                                                      tmp_path: Path,
                                                                      work: Path) -> None:
    train_here(saved_index, tmp_path / "ref")
    out = tmp_path / "m"
    kill_during_training(saved_index, out, "after-checkpoint", work)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "training" and epochs_logged(out) == [1]
    with pytest.raises(ArtifactError, match="already exists"):  # a plain rerun refuses
        train_here(saved_index, out)
    train_here(saved_index, out, resume=True)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert epochs_logged(out) == [1, 2, 3]
    assert same_weights(out / "checkpoint" / "model.safetensors",
                        tmp_path / "ref" / "checkpoint" / "model.safetensors")
    assert search_ids(out) == search_ids(tmp_path / "ref")  # loads, sha256 verified


@pytest.mark.slow
@pytest.mark.parametrize("restart", ["resume", "overwrite"])
def test_kill_9_before_the_first_checkpoint_restarts_cleanly(restart: str, saved_index: Path,
                                                             tmp_path: Path,
                                                             work: Path) -> None:
    out = tmp_path / "m"
    kill_during_training(saved_index, out, "first-checkpoint", work)
    assert not (out / "checkpoint").exists()
    assert {p.name for p in out.iterdir()} <= {"manifest.json", "tokenizer.json",
                                               "model.safetensors", "train_log.jsonl"}
    train_here(saved_index, out, **{restart: True})
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
    assert epochs_logged(out) == [1, 2, 3] and search_ids(out)
    assert [n for n in siblings(out) if n.startswith(".m.")] == []


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["after-checkpoint", "between-renames"])
def test_kill_9_of_an_overwrite_keeps_the_old_model(mode: str, saved_index: Path,
                                                    tmp_path: Path, work: Path) -> None:
    """``gcmr train OUT --overwrite`` over a model, killed mid-run or between the two renames
    of its final swap (fault injection: the atomic exchange turned off): the old model is
    still there, or put back on the next load, and loads with its checksums; ``--resume``
    then finishes the replacement."""
    from gcmr.train.loop import staging_path

    out = tmp_path / "m"
    train_here(saved_index, out)
    old_ids, old_manifest = search_ids(out), json.loads((out / "manifest.json").read_text())
    shutil.copy(out / "model.safetensors", tmp_path / "old.safetensors")
    new = {**TRAIN_CFG, "seed": 7}
    kill_during_training(saved_index, out, mode, work, config=new, overwrite=True)
    if mode == "between-renames":
        assert not out.exists()  # what the kill left: the old model hidden beside it
        assert any(n.startswith(".m.old-") for n in siblings(out))
    assert search_ids(out) == old_ids  # recovered (rolled back) and verified on load
    assert json.loads((out / "manifest.json").read_text()) == old_manifest
    assert same_weights(out / "model.safetensors", tmp_path / "old.safetensors")
    assert (staging_path(out) / "checkpoint" / "state.json").is_file()  # kept to resume
    from gcmr.train import TrainConfig, train

    train(saved_index, out, config=TrainConfig(**new), model_options=TINY_MODEL,
          show_progress=False, resume=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["train_config"]["seed"] == 7
    assert not staging_path(out).exists()
    assert [n for n in siblings(out) if n.startswith(".m.")] == []


# ----------------------------------------------------------------------------- tokenizer messages


@pytest.mark.parametrize("query,problem", [(" " * 1_000_000, "is empty"),
                                           ("\x00" * 1_000_000, "has no tokens"),
                                           (["x"] * 1_000_000, "must be a str")])
def test_tokenizer_errors_never_echo_a_1_mb_query(query, problem: str) -> None:
    """The library tokenizer (below the search checks) quotes a bad query cut short."""
    from gcmr.errors import GcmrError
    from gcmr.model.tokenizer import QueryTokenizer

    tok = QueryTokenizer.train(["a red dog", "a blue cat"] * 10, vocab_size=40)
    with pytest.raises(GcmrError, match=problem) as err:
        tok.encode_batch(["a dog", query])
    message = str(err.value)
    assert message.startswith("query 1 ") and len(message) < 300
    assert "1,000,000" in message  # the full length is named instead


def test_the_tokenizer_trains_and_encodes_lone_surrogates_escaped() -> None:
    """A caption may hold a lone surrogate (a legal JSON escape in items.jsonl): training and
    encoding see it escaped (safe_text), never a UnicodeEncodeError from the Rust side."""
    from gcmr.model.tokenizer import QueryTokenizer

    tok = QueryTokenizer.train(["a red \ud800 dog", "a blue cat"] * 10, vocab_size=40)
    assert tok.tokenize("a red \ud800 dog") == tok.tokenize("a red \\ud800 dog")
    ids, mask = tok.encode_batch(["a red \ud800 dog", "a blue cat"])
    assert ids.shape[0] == 2 and bool(mask.all(dim=1)[0])
