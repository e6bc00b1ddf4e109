"""Any dataset: a folder of media plus a CSV or JSONL of (file, caption) pairs.

CSV: a header with ``file`` (path relative to ``--root``) and ``caption`` columns, optionally
``split`` (train / val / test, or any name). JSONL: objects with ``file`` and ``caption`` (a
string) or ``captions`` (a list), optionally ``split``. Several rows for one file accumulate.
Without a split column, files are split 80/10/10 by a hash of the file path: deterministic and
stable when files are added.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from gcmr.encoders.importers.base import DatasetRecords, MediaRecord, find_file
from gcmr.encoders.media import guess_modality
from gcmr.errors import GcmrError

FILE_KEYS = ("file", "file_name", "filename", "path")
DEFAULT_NAMES = ("captions.csv", "captions.jsonl", "annotations.csv", "annotations.jsonl")


def hash_split(key: str) -> str:
    """80/10/10 train/val/test from the first 8 bytes of sha1(key)."""
    u = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "train" if u < 0.8 else "val" if u < 0.9 else "test"


def _rows(path: Path) -> list[tuple[int, str, list[str], str | None]]:
    """(line, file, captions, split or None) per annotation row."""
    out = []
    if path.suffix.lower() in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise GcmrError(f"{path} line {lineno}: malformed JSON ({exc})") from exc
                key = next((k for k in FILE_KEYS if isinstance(obj, dict) and k in obj), None)
                if key is None:
                    raise GcmrError(f"{path} line {lineno}: missing field 'file'")
                caps = obj.get("captions", obj.get("caption", []))
                caps = [caps] if isinstance(caps, str) else caps
                if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                    raise GcmrError(f"{path} line {lineno}: field 'caption'/'captions' must be a "
                                    f"string or a list of strings")
                split = obj.get("split")
                out.append((lineno, str(obj[key]), caps, str(split) if split else None))
        return out
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        key = next((k for k in FILE_KEYS if k in header), None)
        cap_cols = [c for c in header if c == "caption" or c.startswith("caption_")]
        if key is None or not cap_cols:
            raise GcmrError(f"{path}: CSV header {header} needs a 'file' column and a 'caption' "
                            f"column (or caption_1..caption_n)")
        for lineno, row in enumerate(reader, start=2):
            caps = [(row.get(c) or "").strip() for c in cap_cols]
            split = (row.get("split") or "").strip() or None
            out.append((lineno, (row.get(key) or "").strip(), [c for c in caps if c], split))
    return out


def read_generic(root: str | Path, *, annotations: str | Path | None = None,
                 modality: str | None = None, name: str | None = None) -> DatasetRecords:
    """Read (file, caption[, split]) rows; media paths are relative to ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise GcmrError(f"{root}: dataset root is not a directory")
    ann = find_file(root, list(DEFAULT_NAMES), override=annotations,
                    what="captions file (CSV or JSONL with file and caption columns)")
    assert ann is not None
    order: list[str] = []
    texts: dict[str, list[str]] = {}
    split_of: dict[str, str] = {}
    for lineno, file, caps, split in _rows(ann):
        if not file:
            raise GcmrError(f"{ann} line {lineno}: empty file name")
        if file not in texts:
            order.append(file)
            texts[file] = []
        texts[file].extend(caps)
        if split is not None:
            if split_of.get(file, split) != split:
                raise GcmrError(f"{ann} line {lineno}: {file} is in split {split_of[file]!r} "
                                f"and {split!r}")
            split_of[file] = split
    if split_of and len(split_of) != len(order):
        first = next(f for f in order if f not in split_of)
        raise GcmrError(f"{ann}: some rows have a split and some do not (e.g. {first})")
    modality = modality or guess_modality(order)
    records, missing = [], []
    for file in order:
        path = Path(file) if Path(file).is_absolute() else root / file
        if not path.is_file():
            missing.append(file)
            continue
        item_id = Path(file).with_suffix("").as_posix()
        records.append(MediaRecord(item_id, path, split_of.get(file) or hash_split(file),
                                   texts[file]))
    return DatasetRecords(name or root.name or "generic", modality, root, records, missing,
                          {"annotations": str(ann),
                           "split_protocol": "given" if split_of else "hash-80/10/10"})
