"""Degenerate data is reported, not indexed in silence: all-zero and duplicate embedding rows
and a collision rate that says the embeddings carry no information give warnings that the
library raises, the manifest keeps and ``gcmr index`` prints."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from gcmr.cli import main
from gcmr.ids import build_index, load_index
from gcmr.ids.stats import DataWarning, RowScan, degenerate_warnings, index_stats

FAST = ["--clusters", "8", "--codebook-size", "16", "--epochs", "2", "--quiet"]


def test_row_scan_finds_zero_and_duplicate_rows_across_chunks() -> None:
    x = np.random.default_rng(0).normal(size=(9000, 12)).astype(np.float32)
    x[5] = 0.0
    x[7] = -0.0  # the same vector as +0.0
    x[4200] = x[3]  # a duplicate in another hashing step
    x[8999] = x[3]
    scan = RowScan(12)
    for start in range(0, len(x), 2500):  # chunk edges fall between the rows
        scan.update(x[start:start + 2500].astype(np.float16).astype(np.float32))
    result = scan.result()
    assert result["rows"] == 9000
    assert result["zero_rows"] == 2 and result["zero_examples"] == [5, 7]
    # the zero rows are reported once, as zero rows, not again as duplicates
    assert result["duplicate_rows"] == 2
    assert result["duplicate_examples"] == [[4200, 3], [8999, 3]]


def test_row_scan_of_clean_data_finds_nothing() -> None:
    scan = RowScan(8)
    scan.update(np.random.default_rng(1).normal(size=(500, 8)))
    assert scan.result()["zero_rows"] == 0 and scan.result()["duplicate_rows"] == 0
    assert RowScan(8).result()["rows"] == 0


def test_collision_warning_only_when_the_level_sizes_do_not_force_it() -> None:
    clean = {"zero_rows": 0, "duplicate_rows": 0, "zero_examples": [], "duplicate_examples": []}
    n = 100
    codes = np.zeros((n, 3), dtype=np.int64)
    codes[:, 2] = np.arange(n)  # one semantic id: every item told apart by the counter
    stats = index_stats(codes, [4, 4, n], ["a", "b", "unique"])
    (message,) = degenerate_warnings(clean, stats, [4, 4, n])
    assert "99.0%" in message and "almost no information" in message
    # 16 possible semantic ids for 100 items: collisions are forced by the sizes, not the data
    codes[:, 0], codes[:, 1] = np.arange(n) % 4, np.arange(n) // 4 % 4
    codes[:, 2] = np.arange(n) // 16
    stats = index_stats(codes, [4, 4, 7], ["a", "b", "unique"])
    assert degenerate_warnings(clean, stats, [4, 4, 7]) == []
    # atomic ids (no semantic level): the counter is the identifier by design
    stats = index_stats(np.arange(n)[:, None], [n], ["unique"])
    assert degenerate_warnings(clean, stats, [n]) == []


def test_a_zero_matrix_warns_and_the_manifest_keeps_the_warnings(corpus_of, fast_config,
                                                                 tmp_path) -> None:
    corpus = corpus_of(np.zeros((200, 16), dtype=np.float32))
    with pytest.warns(DataWarning) as record:
        index = build_index(corpus, fast_config(), show_progress=False)
    texts = [str(w.message) for w in record]
    assert any("200 of 200 embedding rows are all zero" in t for t in texts)
    assert any("almost no information" in t for t in texts)
    assert index.stats["embeddings"]["zero_rows"] == 200
    index.save(tmp_path / "idx")
    saved = json.loads((tmp_path / "idx" / "manifest.json").read_text())["stats"]
    assert saved["warnings"] == index.stats["warnings"] and len(saved["warnings"]) == 2
    assert load_index(tmp_path / "idx").stats["embeddings"]["zero_rows"] == 200


def test_clean_data_builds_without_warnings(small_corpus, fast_config) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        index = build_index(small_corpus, fast_config(), show_progress=False)
    assert index.stats["warnings"] == [] and index.stats["embeddings"]["duplicate_rows"] == 0


def test_index_verb_prints_zero_and_duplicate_row_warnings(clustered, corpus_of, tmp_path,
                                                           capsys) -> None:
    emb = clustered(300, 16)
    emb[10] = 0.0
    emb[20] = emb[30] = emb[11]
    corpus = corpus_of(emb)
    assert main(["index", str(corpus.path), str(tmp_path / "idx"), *FAST]) == 0
    err = " ".join(capsys.readouterr().err.split())  # undo the console's line wrapping
    assert "warning:" in err and "1 of 300 embedding rows are all zero" in err
    assert "row 10 ('it00010')" in err
    assert "2 of 300 embedding rows duplicate an earlier row" in err
    assert "row 20 ('it00020') = row 11" in err
    stats = json.loads((tmp_path / "idx" / "manifest.json").read_text())["stats"]
    assert stats["embeddings"]["duplicate_examples"] == [[20, 11], [30, 11]]
