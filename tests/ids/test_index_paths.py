"""Paths in manifests are absolute: an index built with relative paths from one directory
trains from any other, and the model it gives records absolute paths too."""

from __future__ import annotations

import json
from pathlib import Path

from gcmr.cli import main
from gcmr.ids import load_index_and_corpus

FAST = ["--clusters", "4", "--codebook-size", "4", "--epochs", "1", "--max-steps", "5",
        "--quiet"]


def test_relative_paths_are_recorded_absolute(small_corpus, tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "w").symlink_to(small_corpus.path)  # the corpus as the user names it there
    monkeypatch.chdir(work)
    assert main(["index", "w", "idx", *FAST]) == 0
    manifest = json.loads((work / "idx" / "manifest.json").read_text())
    assert Path(manifest["corpus_path"]).is_absolute()
    assert Path(manifest["corpus_path"]) == (work / "w").resolve()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    index, corpus = load_index_and_corpus(work / "idx")  # what `gcmr train /abs/idx` reads
    assert corpus.fingerprint == index.corpus_fingerprint
    assert main(["train", str(work / "idx"), "M", "--epochs", "1", "--quiet",
                 "--vocab-size", "120", "--d-model", "16", "--heads", "2", "--ffn", "32",
                 "--encoder-layers", "1", "--decoder-layers", "1"]) == 0
    model = json.loads((elsewhere / "M" / "manifest.json").read_text())
    assert model["index"]["path"] == str((work / "idx").resolve())
    assert Path(model["corpus"]["path"]).is_absolute()
