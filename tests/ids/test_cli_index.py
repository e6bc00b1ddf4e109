"""``gcmr index`` through the CLI entry point."""

from __future__ import annotations

import json

from gcmr.cli import main
from gcmr.ids import load_index

FAST = ["--clusters", "8", "--codebook-size", "16", "--epochs", "2", "--quiet"]


def test_index_verb_builds_and_prints_stats(small_corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(small_corpus.path), str(out), *FAST]) == 0
    text = capsys.readouterr().out
    for word in ("coarse", "fine1", "fine2", "unique", "utilization", "collision rate",
                 "unique identifiers"):
        assert word in text
    index = load_index(out, corpus=small_corpus)
    assert index.config.num_clusters == 8 and index.level_sizes[:3] == [8, 16, 16]


def test_index_verb_json_and_schemes(small_corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    # hkmeans reads neither --codebook-size nor the RQ-VAE --epochs of FAST (refused now)
    assert main(["index", str(small_corpus.path), str(out), "--clusters", "8", "--quiet",
                 "--scheme", "hkmeans", "--levels", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scheme"] == "hkmeans" and len(data["level_sizes"]) == 3
    assert data["stats"]["unique_ids_pct"] == 100.0


def test_index_verb_config_file_and_overrides(small_corpus, tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"scheme": "rq", "codebook_size": 8, "latent_dim": 4,
                               "hidden_dims": [16], "epochs": 1}))
    out = tmp_path / "idx"
    assert main(["index", str(small_corpus.path), str(out), "--config", str(cfg),
                 "--levels", "3", "--quiet"]) == 0
    index = load_index(out)
    assert index.config.scheme == "rq" and index.level_sizes[:4] == [8, 8, 8, 8]


def test_index_verb_errors_exit_2(small_corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(tmp_path / "nope"), str(out), *FAST]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["index", str(small_corpus.path), str(out), *FAST]) == 0
    assert main(["index", str(small_corpus.path), str(out), *FAST]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["index", str(small_corpus.path), str(tmp_path / "o2"), "--max-steps", "-1"]) == 2
    assert "max_steps" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"clusters": 4}')
    assert main(["index", str(small_corpus.path), str(tmp_path / "o3"), "--config", str(bad)]) == 2
    assert "unknown field" in capsys.readouterr().err
