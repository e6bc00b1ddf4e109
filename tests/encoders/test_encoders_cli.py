"""The ``embed``, ``caption`` and ``import`` verbs through ``gcmr.cli.main``."""

from __future__ import annotations

import json

import media_fixtures as mf
import numpy as np
import pytest

from gcmr.cli import main
from gcmr.corpus import load_corpus


@pytest.fixture
def photo_folder(tmp_path):
    root = tmp_path / "photos"
    rows = ["file,caption,split"]
    for i, split in enumerate(["train", "train", "train", "val", "test"]):
        mf.write_image(root / "pics" / f"p{i}.png", seed=10 + i)
        rows.append(f"pics/p{i}.png,photo number {i},{split}")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


def test_embed_folder_then_import_precomputed(tmp_path, photo_folder, clip_dir, capsys):
    emb = tmp_path / "vecs.npy"
    assert main(["embed", str(photo_folder / "pics"), "--encoder", f"hf-clip:{clip_dir}",
                 "--out", str(emb), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 5 and summary["dim"] == 16
    assert (tmp_path / "vecs.ids.txt").read_text().splitlines() == [f"p{i}.png" for i in range(5)]
    out = tmp_path / "corpus"
    assert main(["import", "generic", "--root", str(photo_folder), str(out), "--encoder",
                 f"precomputed:{emb}", "--no-progress"]) == 0
    c = load_corpus(out)
    assert np.allclose(np.asarray(c.embeddings), np.load(emb), atol=1e-6)
    assert "imported generic" in capsys.readouterr().out


def test_reembed_corpus_and_caption_embeddings(tmp_path, photo_folder, clip_dir, siglip_dir,
                                               capsys):
    out = tmp_path / "corpus"
    assert main(["import", "generic", "--root", str(photo_folder), str(out), "--encoder",
                 f"hf-clip:{clip_dir}", "--no-progress"]) == 0
    fp = load_corpus(out).fingerprint
    # a different encoder, in place: new dim and model in corpus.json, same items and queries
    assert main(["embed", str(out), "--encoder", f"hf-siglip:{siglip_dir}", "--no-progress"]) == 0
    c = load_corpus(out)
    assert c.dim == 32 and c.meta.embedding_model == f"hf-siglip:{siglip_dir}"
    assert c.fingerprint != fp and len(c.split("train")) == 3
    assert c.meta.extra["source_dataset"] == "photos"  # extra fields survive the rewrite
    assert main(["embed", str(out), "--target", "captions", "--encoder", f"hf-clip:{clip_dir}",
                 "--no-progress"]) == 0
    cap = load_corpus(out).caption_embeddings()
    assert cap is not None and cap.shape == (5, 16)
    assert not list(tmp_path.glob(".corpus.*"))


def test_caption_verb_with_file(tmp_path, photo_folder, clip_dir, capsys):
    out = tmp_path / "corpus"
    main(["import", "generic", "--root", str(photo_folder), str(out), "--encoder",
          f"hf-clip:{clip_dir}", "--no-progress"])
    capsys.readouterr()
    caps = tmp_path / "caps.csv"
    caps.write_text("id,caption\npics/p4,a generated caption\npics/p0,another one\n")
    assert main(["caption", str(out), "--captions-file", str(caps), "--mode", "append",
                 "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items_without_new_captions"] == 3
    c = load_corpus(out)
    assert c.captions[4] == ["a generated caption"]
    assert c.captions[0] == ["photo number 0", "another one"]


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["import", "flickr30k", "--root", str(tmp_path / "empty"),
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "gcmr import: error:" in err and "dataset_flickr30k.json" in err
    assert main(["embed", str(tmp_path / "empty"), "--encoder", "nope", "--modality", "image",
                 "--out", str(tmp_path / "e.npy")]) == 2
    assert "unknown encoder 'nope'" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "empty"), "--encoder", "minilm"]) == 2
    assert "--out EMB.npy is required" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "empty"), "--encoder", "minilm", "--out",
                 str(tmp_path / "e.npy")]) == 2
    assert "empty: no media files" in capsys.readouterr().err


def test_help_documents_the_spec_grammar(capsys):
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    text = capsys.readouterr().out
    for spec in ("efficientnet-lite0", "open_clip:MODEL[:PRETRAINED]", "hf-clap:SRC",
                 "imagebind[:CHECKPOINT.pth]", "precomputed:EMB.npy[:IDS.txt]", "minilm"):
        assert spec in text
