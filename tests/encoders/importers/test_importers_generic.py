"""The generic (file, caption) importer, and the import options every dataset shares:
captioner, captions file, caption embeddings, resuming an interrupted import."""

from __future__ import annotations

import json
from pathlib import Path

import media_fixtures as mf
import numpy as np
import pytest

from gcmr.corpus import load_corpus
from gcmr.encoders.importers import import_dataset, read_dataset
from gcmr.encoders.importers.generic import hash_split
from gcmr.errors import ArtifactError, ConfigError, GcmrError


def write_folder(root: Path, *, with_split: bool = True, n: int = 6) -> Path:
    rows = ["file,caption,split"] if with_split else ["file,caption"]
    splits = ["train", "train", "train", "train", "val", "test"]
    for i in range(n):
        mf.write_image(root / "pics" / f"p{i}.png", seed=i)
        for k in range(2):
            row = f"pics/p{i}.png,picture {i} variant {k}"
            rows.append(row + (f",{splits[i % len(splits)]}" if with_split else ""))
    rows.append("pics/gone.png,a file that is not there" + (",test" if with_split else ""))
    (root / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_generic_csv_with_splits(tmp_path):
    data = read_dataset("generic", write_folder(tmp_path / "photos"))
    assert data.name == "photos" and data.modality == "image" and data.missing == ["pics/gone.png"]
    assert [r.id for r in data.records] == [f"pics/p{i}" for i in range(6)]
    assert data.split_counts() == {"train": 4, "val": 1, "test": 1}
    assert data.records[0].texts == ["picture 0 variant 0", "picture 0 variant 1"]


def test_generic_jsonl_hash_split_is_deterministic(tmp_path):
    root = tmp_path / "g"
    lines = []
    for i in range(40):
        mf.write_wav(root / f"s{i}.wav", freq=200 + 10 * i, seconds=0.05)
        lines.append(json.dumps({"file": f"s{i}.wav", "captions": [f"sound {i}"]}))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    data = read_dataset("generic", root, annotations=root / "data.jsonl")
    assert data.modality == "audio"
    assert [r.split for r in data.records] == [hash_split(f"s{i}.wav") for i in range(40)]
    assert set(data.split_counts()) == {"train", "val", "test"}
    assert data.notes["split_protocol"] == "hash-80/10/10"


def test_generic_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GcmrError, match=r"empty/captions\.csv: captions file .*not found"):
        read_dataset("generic", tmp_path / "empty")
    root = tmp_path / "bad"
    root.mkdir()
    (root / "captions.csv").write_text("path_to,text\na,b\n")
    with pytest.raises(GcmrError, match="needs a 'file' column"):
        read_dataset("generic", root)
    (root / "captions.csv").write_text("file,caption,split\na.png,x,train\na.png,y,test\n")
    with pytest.raises(GcmrError, match="line 3: a.png is in split 'train' and 'test'"):
        read_dataset("generic", root)
    with pytest.raises(ConfigError, match=r"option\(s\) \['split'\] do not apply to generic"):
        read_dataset("generic", root, split="7k")
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        read_dataset("imagenet", root)


def test_import_with_captioner_captions_all_items(tmp_path, git_dir):
    root = write_folder(tmp_path / "photos")
    out = tmp_path / "corpus"
    summary = import_dataset("generic", root, out, encoder="efficientnet-lite0",
                             captioner=f"hf:{git_dir}", show_progress=False)
    c = load_corpus(out)
    assert c.meta.embedding_model == "efficientnet-lite0" and c.dim == 1280
    assert c.meta.extra["captions_from"] == f"captioner:hf:{git_dir}"
    assert summary["items_with_captions"] == 6 and all(c.captions)  # test items too
    human = {q.text for split in c.splits for q in c.split(split)}
    assert not human & {t for caps in c.captions for t in caps}
    assert not list(tmp_path.glob(".corpus.*"))  # work files cleaned up


def test_import_with_captions_file_and_caption_embeddings(tmp_path, clip_spec):
    root = write_folder(tmp_path / "photos")
    caps = tmp_path / "generated.jsonl"
    caps.write_text("\n".join(json.dumps({"file": f"pics/p{i}.png", "caption": f"gen {i}"})
                              for i in range(5)) + "\n")
    out = tmp_path / "corpus"
    summary = import_dataset("generic", root, out, encoder=clip_spec, captions_file=caps,
                             caption_embeddings=True, show_progress=False)
    assert summary["items_unmatched_in_captions_file"] == 1
    c = load_corpus(out)
    assert c.captions[:5] == [[f"gen {i}"] for i in range(5)] and c.captions[5] == []
    cap_emb = c.caption_embeddings()
    assert cap_emb is not None and cap_emb.shape == (6, 16)
    assert np.allclose(np.linalg.norm(cap_emb[:5], axis=1), 1, atol=1e-4)
    assert np.all(cap_emb[5] == 0)
    assert c.meta.extra["caption_embedding_model"] == clip_spec
    with pytest.raises(ArtifactError, match="already exists"):
        import_dataset("generic", root, out, encoder=clip_spec, show_progress=False)
    with pytest.raises(ConfigError, match="has no text tower.*--text-encoder minilm"):
        import_dataset("generic", root, tmp_path / "o2", encoder="efficientnet-lite0",
                       caption_embeddings=True, show_progress=False)


def test_interrupted_import_resumes(tmp_path, clip_spec, monkeypatch):
    from gcmr.encoders.registry import load_encoder

    root = write_folder(tmp_path / "photos", n=6)
    out = tmp_path / "corpus"
    enc = load_encoder(clip_spec, modality="image", batch_size=2)
    real = enc.encode_items
    calls = []

    def flaky(ids, paths):
        calls.append(list(ids))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user presses Ctrl-C during the 2nd batch
        return real(ids, paths)

    monkeypatch.setattr(enc, "encode_items", flaky)
    from gcmr.encoders.importers import build_corpus

    data = read_dataset("generic", root)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(data, out, encoder=enc, chunk_size=2, show_progress=False)
    assert not out.exists()
    assert len(list((tmp_path / ".corpus.embeddings.partial").glob("chunk_*.npy"))) == 1
    calls.clear()
    monkeypatch.setattr(enc, "encode_items", lambda ids, paths: calls.append(list(ids))
                        or real(ids, paths))
    build_corpus(data, out, encoder=enc, chunk_size=2, show_progress=False)
    assert calls == [["pics/p2", "pics/p3"], ["pics/p4", "pics/p5"]]  # chunk 0 was reused
    ref = tmp_path / "ref"
    build_corpus(data, ref, encoder=enc, chunk_size=2, show_progress=False)
    assert np.array_equal(np.asarray(load_corpus(out).embeddings),
                          np.asarray(load_corpus(ref).embeddings))
