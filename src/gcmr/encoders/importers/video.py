"""Text-to-video datasets: MSR-VTT and MSVD.

MSR-VTT: the JSON annotations (``MSRVTT_data.json`` as distributed with CLIP4Clip in
``msrvtt_data/`` next to the 1k-A CSVs, or the original ``train_val_videodatainfo.json`` +
``test_videodatainfo.json``), each
``{"videos": [{"video_id", "split"}], "sentences": [{"video_id", "caption"}]}``, 20 sentences
per video. Splits:

- ``1k-A`` (default; the papers' protocol, from JSFusion): train = the 9,000 videos of
  ``MSRVTT_train.9k.csv``, test = the 1,000 (video, sentence) pairs of
  ``MSRVTT_JSFUSION_test.csv``. 1k-A has no validation set, so the official "validate" videos
  (497) inside the 9k are held out as val: their sentences are val queries instead of train
  queries (and, without a captioner, they get no training captions);
- ``7k``: the official 6,513 / 497 / 2,990 split from the JSON ``split`` field, all sentences.

MSVD: the caption file ``AllVideoDescriptions.txt`` (``<video name> <caption>`` per line,
``#`` comments) and the standard 1,200 / 100 / 670 split, read from ``youtube_mapping.txt``
(``<video name> vid<N>``: vid1-1200 train, vid1201-1300 val, vid1301-1970 test) or from
``train_list.txt`` / ``val_list.txt`` / ``test_list.txt`` (one video name per line).
Video files (``TrainValVideo/``, ``YouTubeClips/``, ...) are found by name under ``--root``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from gcmr.encoders.importers.base import DatasetRecords, MediaIndex, MediaRecord, find_file
from gcmr.encoders.media import VIDEO_EXTENSIONS
from gcmr.errors import ConfigError, GcmrError

MSRVTT_SPLITS = ("1k-A", "7k")
MSRVTT_OFFICIAL = {"train": "train", "validate": "val", "val": "val", "test": "test"}
MSVD_RANGES = (("train", 1, 1200), ("val", 1201, 1300), ("test", 1301, 1970))


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GcmrError(f"{path}: malformed JSON ({exc})") from exc


def _msrvtt_annotations(root: Path, override: str | Path | None, dirs: list[str]
                        ) -> tuple[list[str], dict[str, str], dict[str, list[str]], list[str]]:
    """(video ids in order, official split per video, sentences per video, files read)."""
    if override is not None:
        paths = [find_file(root, [], override=override, what="MSR-VTT annotation JSON")]
    else:
        one = find_file(root, ["MSRVTT_data.json"], what="MSR-VTT annotations", required=False,
                        extra_dirs=dirs)
        if one is not None:
            paths = [one]
        else:
            tv = find_file(root, ["train_val_videodatainfo.json"], extra_dirs=dirs,
                           what="MSR-VTT annotation JSON (MSRVTT_data.json or "
                           "train_val_videodatainfo.json + test_videodatainfo.json)")
            test = find_file(root, ["test_videodatainfo.json"], what="MSR-VTT test annotations",
                             extra_dirs=dirs)
            paths = [tv, test]
    order: list[str] = []
    official: dict[str, str] = {}
    sentences: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        assert path is not None
        data = _load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("videos"), list) or \
                not isinstance(data.get("sentences"), list):
            raise GcmrError(f"{path}: expected an object with 'videos' and 'sentences' lists")
        for i, v in enumerate(data["videos"]):
            try:
                vid, split = v["video_id"], v.get("split", "")
            except (KeyError, TypeError) as exc:
                raise GcmrError(f"{path} videos[{i}]: missing field {exc}") from exc
            if vid not in official:
                order.append(vid)
            official[vid] = split
        for i, s in enumerate(data["sentences"]):
            try:
                sentences[s["video_id"]].append(s["caption"])
            except (KeyError, TypeError) as exc:
                raise GcmrError(f"{path} sentences[{i}]: missing field {exc}") from exc
    return order, official, sentences, [str(p) for p in paths]


def _csv_column(path: Path, column: str) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise GcmrError(f"{path}: no column {column!r} (header: {reader.fieldnames})")
        return [dict(row) for row in reader]


def read_msrvtt(root: str | Path, *, split: str = "1k-A",
                annotations: str | Path | None = None) -> DatasetRecords:
    """Read MSR-VTT under ``root`` with the ``1k-A`` (default) or ``7k`` split."""
    root = Path(root)
    if split not in MSRVTT_SPLITS:
        raise ConfigError(f"MSR-VTT split must be one of {list(MSRVTT_SPLITS)}, got {split!r}")
    # CLIP4Clip ships the JSON and the 1k-A CSVs together in msrvtt_data/; with --annotations,
    # the CSVs are looked for next to the given JSON first
    dirs = ([str(Path(annotations).parent)] if annotations else []) + ["msrvtt_data"]
    order, official, sentences, files = _msrvtt_annotations(root, annotations, dirs)
    texts_of: dict[str, list[str]] = {}
    split_of: dict[str, str] = {}
    if split == "7k":
        for vid in order:
            raw = official.get(vid, "")
            if raw not in MSRVTT_OFFICIAL:
                raise GcmrError(f"{files[0]}: video {vid} has split {raw!r}; the 7k protocol needs "
                                f"one of {sorted(MSRVTT_OFFICIAL)}")
            split_of[vid] = MSRVTT_OFFICIAL[raw]
            texts_of[vid] = sentences.get(vid, [])
    else:
        train_csv = find_file(root, ["MSRVTT_train.9k.csv"], what="MSR-VTT 9k train list",
                              extra_dirs=dirs)
        test_csv = find_file(root, ["MSRVTT_JSFUSION_test.csv"], what="MSR-VTT 1k-A test pairs",
                             extra_dirs=dirs)
        assert train_csv is not None and test_csv is not None
        files += [str(train_csv), str(test_csv)]
        for row in _csv_column(train_csv, "video_id"):
            vid = row["video_id"].strip()
            if vid not in sentences:
                raise GcmrError(f"{train_csv}: video {vid} has no sentences in {files[0]}")
            is_val = MSRVTT_OFFICIAL.get(official.get(vid, "")) == "val"
            split_of[vid] = "val" if is_val else "train"
            texts_of[vid] = sentences[vid]
        for row in _csv_column(test_csv, "video_id"):
            vid = row["video_id"].strip()
            if "sentence" not in row:
                raise GcmrError(f"{test_csv}: no column 'sentence'")
            if split_of.get(vid, "test") != "test":
                raise GcmrError(f"{test_csv}: test video {vid} is also in {train_csv}")
            split_of[vid] = "test"
            texts_of.setdefault(vid, []).append(row["sentence"].strip())
        order = [v for v in order if v in split_of] + sorted(set(split_of) - set(order))
    index = MediaIndex(root, VIDEO_EXTENSIONS)
    records, missing = [], []
    for vid in order:
        path = index.find(vid)
        if path is None:
            missing.append(vid)
            continue
        records.append(MediaRecord(vid, path, split_of[vid], texts_of[vid]))
    return DatasetRecords("msrvtt", "video", root, records, missing,
                          {"annotations": files, "split_protocol": split})


def _msvd_captions(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    order: list[str] = []
    caps: dict[str, list[str]] = defaultdict(list)
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, text = line.partition(" ")
            if not text.strip():
                raise GcmrError(f"{path} line {lineno}: expected '<video name> <caption>'")
            if name not in caps:
                order.append(name)
            caps[name].append(text.strip())
    return order, caps


def _msvd_splits(root: Path) -> tuple[dict[str, str], list[str]]:
    mapping = find_file(root, ["youtube_mapping.txt"], what="MSVD split", required=False)
    if mapping is not None:
        split_of: dict[str, str] = {}
        for lineno, line in enumerate(mapping.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].startswith("vid") or not parts[1][3:].isdigit():
                raise GcmrError(f"{mapping} line {lineno}: expected '<video name> vid<N>'")
            n = int(parts[1][3:])
            for split, lo, hi in MSVD_RANGES:
                if lo <= n <= hi:
                    split_of[parts[0]] = split
        return split_of, [str(mapping)]
    lists = [find_file(root, [f"{s}_list.txt"], what="MSVD split list", required=False)
             for s, _, _ in MSVD_RANGES]
    if all(p is None for p in lists):
        raise GcmrError(f"{root / 'youtube_mapping.txt'}: MSVD split not found (or "
                        f"train_list.txt / val_list.txt / test_list.txt)")
    split_of = {}
    for (split, _, _), path in zip(MSVD_RANGES, lists):
        if path is None:
            raise GcmrError(f"{root / (split + '_list.txt')}: MSVD {split} list not found")
        for name in path.read_text(encoding="utf-8").split():
            split_of[name] = split
    return split_of, [str(p) for p in lists]


def read_msvd(root: str | Path, *, annotations: str | Path | None = None) -> DatasetRecords:
    """Read MSVD's caption file and the 1200/100/670 split under ``root``."""
    root = Path(root)
    cap_path = find_file(root, ["AllVideoDescriptions.txt"], override=annotations,
                         what="MSVD caption file")
    assert cap_path is not None
    order, caps = _msvd_captions(cap_path)
    split_of, split_files = _msvd_splits(root)
    index = MediaIndex(root, VIDEO_EXTENSIONS)
    records, missing = [], []
    names = [n for n in order if n in split_of] + sorted(set(split_of) - set(order))
    for name in names:
        path = index.find(name)
        if path is None:
            missing.append(name)
            continue
        records.append(MediaRecord(name, path, split_of[name], caps.get(name, [])))
    return DatasetRecords("msvd", "video", root, records, missing,
                          {"annotations": [str(cap_path), *split_files],
                           "split_protocol": "1200/100/670"})
