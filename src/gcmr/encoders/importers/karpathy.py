"""Flickr30K and MS-COCO through Karpathy's split files (``dataset_flickr30k.json``,
``dataset_coco.json``), the splits every text-to-image retrieval paper uses.

Layout of the JSON: ``{"images": [{"filename", "filepath"? (COCO: train2014/val2014), "split":
train|val|test|restval, "cocoid"? , "sentences": [{"raw", "tokens"}, ...]}, ...]}``.
``restval`` images join train (standard practice). Splits: Flickr30K about 29k / 1k / 1k
images (5 captions each); COCO 113,287 / 5,000 / 5,000 with restval in train: the "5k test"
the papers report.
Images are found under ``--root`` by their relative path (``filepath/filename``,
``flickr30k-images/filename``, ``images/...``) or, for any other layout, by file name; COCO 2017
file names (``000000391895.jpg``) are matched through ``cocoid``.
"""

from __future__ import annotations

import json
from pathlib import Path

from gcmr.encoders.importers.base import DatasetRecords, MediaIndex, MediaRecord, find_file
from gcmr.encoders.media import IMAGE_EXTENSIONS
from gcmr.errors import GcmrError

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def read_karpathy(root: str | Path, dataset: str, *, annotations: str | Path | None = None
                  ) -> DatasetRecords:
    """Read ``dataset_<dataset>.json`` (dataset = flickr30k | coco | flickr8k) under ``root``."""
    root = Path(root)
    ann = find_file(root, [f"dataset_{dataset}.json"], override=annotations,
                    what=f"Karpathy split file for {dataset}")
    assert ann is not None
    try:
        data = json.loads(ann.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GcmrError(f"{ann}: malformed JSON ({exc})") from exc
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise GcmrError(f"{ann}: expected an object with an 'images' list (Karpathy split format)")
    index = MediaIndex(root, IMAGE_EXTENSIONS)
    records: list[MediaRecord] = []
    missing: list[str] = []
    for i, img in enumerate(images):
        where = f"{ann} images[{i}]"
        try:
            filename = img["filename"]
            raw_split = img["split"]
            sentences = img.get("sentences", [])
        except (KeyError, TypeError) as exc:
            raise GcmrError(f"{where}: missing field {exc}") from exc
        if raw_split not in KARPATHY_SPLITS:
            raise GcmrError(f"{where}: unknown split {raw_split!r} "
                            f"(expected one of {sorted(KARPATHY_SPLITS)})")
        filepath = img.get("filepath") or ""
        texts = []
        for s in sentences:
            text = s.get("raw") or " ".join(s.get("tokens", []))
            if text.strip():
                texts.append(text.strip())
        alternates = [filename]
        if img.get("cocoid") is not None:
            alternates.append(f"{int(img['cocoid']):012d}")
        rel = [f"{filepath}/{filename}" if filepath else filename,
               f"images/{filepath}/{filename}" if filepath else f"images/{filename}",
               f"flickr30k-images/{filename}", f"Images/{filename}"]
        path = index.find(*alternates, relative=rel)
        item_id = Path(filename).stem
        if path is None:
            missing.append(f"{filepath}/{filename}" if filepath else filename)
            continue
        records.append(MediaRecord(item_id, path, KARPATHY_SPLITS[raw_split], texts))
    return DatasetRecords(dataset, "image", root, records, missing,
                          {"annotations": str(ann), "split_protocol": "karpathy",
                           "restval": "train"})


def read_flickr30k(root: str | Path, *, annotations: str | Path | None = None) -> DatasetRecords:
    return read_karpathy(root, "flickr30k", annotations=annotations)


def read_coco(root: str | Path, *, annotations: str | Path | None = None) -> DatasetRecords:
    return read_karpathy(root, "coco", annotations=annotations)
