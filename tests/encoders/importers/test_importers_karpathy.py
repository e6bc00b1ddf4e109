"""Flickr30K and MS-COCO from Karpathy split files, in the datasets' real folder layouts."""

from __future__ import annotations

import json
from pathlib import Path

import media_fixtures as mf
import pytest

from gcmr.corpus import load_corpus
from gcmr.encoders.importers import import_dataset, read_dataset
from gcmr.errors import GcmrError


def _sentences(img_id: int, n: int = 2) -> list[dict]:
    return [{"raw": f"image {img_id} caption {k} with a dog", "tokens": [], "imgid": img_id,
             "sentid": img_id * 10 + k} for k in range(n)]


def write_flickr30k(root: Path) -> Path:
    """dataset_flickr30k.json + flickr30k-images/*.jpg; 1000000005.jpg is missing on disk."""
    images = []
    splits = ["train", "train", "train", "val", "test", "test"]
    for i, split in enumerate(splits):
        name = f"100000000{i}.jpg"
        images.append({"filename": name, "imgid": i, "split": split,
                       "sentids": [i * 10, i * 10 + 1], "sentences": _sentences(i)})
        if i != 5:
            mf.write_image(root / "flickr30k-images" / name, seed=i)
    (root / "dataset_flickr30k.json").write_text(
        json.dumps({"images": images, "dataset": "flickr30k"}), encoding="utf-8")
    return root


def write_coco(root: Path) -> Path:
    """annotations/dataset_coco.json with filepath; 2014 file names plus one image stored under
    the 2017 naming (train2017/000000000042.jpg), matched through cocoid."""
    rows = [("train2014", 11, "train"), ("val2014", 12, "restval"), ("val2014", 13, "val"),
            ("val2014", 14, "test"), ("train2014", 42, "train")]
    images = []
    for i, (folder, cocoid, split) in enumerate(rows):
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        images.append({"filepath": folder, "filename": name, "cocoid": cocoid, "imgid": i,
                       "split": split, "sentences": _sentences(i, 5)})
        if cocoid == 42:
            mf.write_image(root / "train2017" / f"{cocoid:012d}.jpg", seed=i)
        else:
            mf.write_image(root / folder / name, seed=i)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "dataset_coco.json").write_text(
        json.dumps({"images": images, "dataset": "coco"}), encoding="utf-8")
    return root


def test_read_flickr30k_records_and_missing(tmp_path):
    data = read_dataset("flickr30k", write_flickr30k(tmp_path / "f30k"))
    assert data.modality == "image" and data.missing == ["1000000005.jpg"]
    assert [r.id for r in data.records] == [f"100000000{i}" for i in range(5)]
    assert data.split_counts() == {"train": 3, "val": 1, "test": 1}
    assert data.records[0].texts == ["image 0 caption 0 with a dog", "image 0 caption 1 with a dog"]


def test_import_flickr30k_corpus_without_leakage(tmp_path, clip_spec):
    root = write_flickr30k(tmp_path / "f30k")
    out = tmp_path / "corpus"
    summary = import_dataset("flickr30k", root, out, encoder=clip_spec, show_progress=False)
    assert summary["items"] == 5 and summary["missing_media"] == 1
    assert summary["queries"] == {"test": 2, "train": 6, "val": 2}
    c = load_corpus(out)
    assert c.meta.modality == "image" and c.meta.embedding_model == clip_spec
    assert c.meta.extra["missing_media"] == 1
    assert c.meta.extra["captions_from"] == "human-train-captions"
    assert c.meta.extra["media_root"] == str(root.resolve())
    assert c.sources[0] == "flickr30k-images/1000000000.jpg"
    # train items carry their human captions; val/test items none (no test query leaks)
    train_rows = [c.row_of[q.relevant[0]] for q in c.split("train")]
    assert all(c.captions[r] for r in train_rows)
    all_captions = {t for caps in c.captions for t in caps}
    assert not all_captions & {q.text for q in c.split("test") + c.split("val")}
    assert c.split("test")[0].relevant == ("1000000004",)
    assert c.embeddings.shape == (5, 16)


def test_import_coco_karpathy_restval_and_2017_names(tmp_path, clip_spec):
    root = write_coco(tmp_path / "coco")
    data = read_dataset("coco", root)
    assert data.missing == []
    assert {r.id: r.split for r in data.records} == {
        "COCO_train2014_000000000011": "train", "COCO_val2014_000000000012": "train",
        "COCO_val2014_000000000013": "val", "COCO_val2014_000000000014": "test",
        "COCO_train2014_000000000042": "train"}
    assert data.records[-1].path.name == "000000000042.jpg"
    out = tmp_path / "corpus"
    summary = import_dataset("coco", root, out, encoder=clip_spec, limit=2, show_progress=False)
    assert summary["items_per_split"] == {"train": 2, "val": 1, "test": 1}
    assert load_corpus(out).meta.extra["importer"]["limit_per_split"] == 2


def test_missing_annotation_names_expected_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GcmrError, match=r"empty/dataset_flickr30k\.json: Karpathy split file"):
        read_dataset("flickr30k", tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dataset_coco.json").write_text('{"images": [{"filename": "x.jpg", "split": "dev"}]}')
    with pytest.raises(GcmrError, match=r"images\[0\]: unknown split 'dev'"):
        read_dataset("coco", bad)


def test_no_media_at_all_is_an_error(tmp_path):
    root = tmp_path / "f"
    write_flickr30k(root)
    for p in (root / "flickr30k-images").iterdir():
        p.unlink()
    with pytest.raises(GcmrError, match="no items with media.*6 annotated items had no media"):
        import_dataset("flickr30k", root, tmp_path / "out", encoder="efficientnet-lite0",
                       show_progress=False)
