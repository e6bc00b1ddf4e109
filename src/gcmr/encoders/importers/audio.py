"""Text-to-audio datasets: Clotho (v2) and AudioCaps.

Clotho: ``clotho_captions_{development,validation,evaluation}.csv`` with columns
``file_name, caption_1 .. caption_5`` and the audio folders (``development/``, or
``clotho_audio_development/...``; any layout works, files are found by name). development ->
train, validation -> val, evaluation -> test. Clotho v1 has no validation split; it is then
simply absent.

AudioCaps: ``train.csv``, ``val.csv``, ``test.csv`` with columns ``audiocap_id, youtube_id,
start_time, caption`` (one row per caption; val/test clips have 5). The audio is not
distributed (YouTube), so users have whatever subset they could download; every clip without a
file is counted in ``missing_media`` (the CART paper reports the same). A clip's file is found by
any of the usual names: ``<youtube_id>``, ``Y<youtube_id>``, ``<youtube_id>_<start>``,
``<youtube_id>_<start>_<end>``, ``Y<youtube_id>_<start>.000_<end>.000`` (end = start + 10 s) or
``<audiocap_id>``, with any audio extension.
"""

from __future__ import annotations

import csv
from pathlib import Path

from gcmr.encoders.importers.base import DatasetRecords, MediaIndex, MediaRecord, find_file
from gcmr.encoders.media import AUDIO_EXTENSIONS
from gcmr.errors import GcmrError

CLOTHO_SPLITS = (("development", "train"), ("validation", "val"), ("evaluation", "test"))
AUDIOCAPS_SPLITS = (("train", "train"), ("val", "val"), ("test", "test"))
CLIP_SECONDS = 10


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        lacking = [c for c in required if c not in header]
        if lacking:
            raise GcmrError(f"{path}: missing column(s) {lacking}; header is {header}")
        reader.fieldnames = header
        return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def read_clotho(root: str | Path, *, annotations: str | Path | None = None) -> DatasetRecords:
    """Read Clotho's caption CSVs under ``root`` (``annotations``: the folder holding them)."""
    root = Path(root)
    ann_root = Path(annotations) if annotations else root
    index = MediaIndex(root, AUDIO_EXTENSIONS)
    records: list[MediaRecord] = []
    missing: list[str] = []
    files = {}
    for raw, split in CLOTHO_SPLITS:
        name = f"clotho_captions_{raw}.csv"
        path = find_file(ann_root, [name], what=f"Clotho {raw} captions",
                         required=raw != "validation")
        if path is None:
            continue
        files[split] = str(path)
        rows = _read_csv(path, ("file_name",))
        cap_cols = [c for c in rows[0] if c.startswith("caption")] if rows else []
        for lineno, row in enumerate(rows, start=2):
            fname = row["file_name"]
            if not fname:
                raise GcmrError(f"{path} line {lineno}: empty file_name")
            texts = [row[c] for c in cap_cols if row.get(c)]
            found = index.find(fname, relative=[f"{raw}/{fname}", f"clotho_audio_{raw}/{fname}",
                                                f"clotho_audio_{raw}/{raw}/{fname}",
                                                f"audio/{raw}/{fname}"])
            if found is None:
                missing.append(f"{raw}/{fname}")
                continue
            records.append(MediaRecord(Path(fname).stem, found, split, texts))
    return DatasetRecords("clotho", "audio", root, records, missing,
                          {"annotations": files, "split_protocol": "clotho-v2"})


def _num(text: str) -> str:
    """``"30"`` / ``"30.0"`` -> ``"30"``; keeps other values as they are."""
    try:
        value = float(text)
    except ValueError:
        return text
    return str(int(value)) if value == int(value) else str(value)


def read_audiocaps(root: str | Path, *, annotations: str | Path | None = None) -> DatasetRecords:
    """Read AudioCaps' train/val/test CSVs under ``root`` and match the clips a user has."""
    root = Path(root)
    ann_root = Path(annotations) if annotations else root
    index = MediaIndex(root, AUDIO_EXTENSIONS)
    records: list[MediaRecord] = []
    missing: list[str] = []
    files = {}
    seen: dict[str, str] = {}
    for raw, split in AUDIOCAPS_SPLITS:
        path = find_file(ann_root, [f"{raw}.csv"], what=f"AudioCaps {raw} annotations")
        assert path is not None
        files[split] = str(path)
        rows = _read_csv(path, ("audiocap_id", "youtube_id", "start_time", "caption"))
        clips: dict[str, MediaRecord] = {}
        clip_missing: set[str] = set()
        for lineno, row in enumerate(rows, start=2):
            yid, start = row["youtube_id"], _num(row["start_time"])
            if not yid:
                raise GcmrError(f"{path} line {lineno}: empty youtube_id")
            item_id = f"{yid}_{start}"
            if item_id in clips:
                if row["caption"]:
                    clips[item_id].texts.append(row["caption"])
                continue
            if item_id in clip_missing:
                continue
            if item_id in seen:
                raise GcmrError(f"{path} line {lineno}: clip {item_id} is also in the "
                                f"{seen[item_id]} split")
            found = index.find(*_audiocaps_names(yid, start, row["audiocap_id"]))
            seen[item_id] = split
            if found is None:
                clip_missing.add(item_id)
                missing.append(item_id)
                continue
            clips[item_id] = MediaRecord(item_id, found, split,
                                         [row["caption"]] if row["caption"] else [])
        records.extend(clips.values())
    return DatasetRecords("audiocaps", "audio", root, records, missing,
                          {"annotations": files, "split_protocol": "audiocaps"})


def _audiocaps_names(yid: str, start: str, audiocap_id: str) -> list[str]:
    try:
        s = float(start)
    except ValueError:
        s = None
    names = [yid, f"Y{yid}", f"{yid}_{start}", f"Y{yid}_{start}"]
    if s is not None:
        e = s + CLIP_SECONDS
        names += [f"{yid}_{int(s)}_{int(e)}", f"{yid}_{s:.3f}_{e:.3f}", f"Y{yid}_{s:.3f}_{e:.3f}",
                  f"{yid}_{int(s * 1000)}_{int(e * 1000)}"]
    if audiocap_id:
        names.append(audiocap_id)
    return names
