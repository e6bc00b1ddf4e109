"""What every dataset importer shares: the record list an annotation reader produces, finding
annotation and media files, and turning records into a corpus (format v1).

Mapping (the same for every dataset):

- each media file is an item: ``id`` = a stable dataset id (file stem, clip id), ``source`` =
  the path relative to ``--root``;
- the dataset's human captions become the query splits: a caption of a train item is a train
  query, of a test item a test query, with ``relevant = [that item]``;
- item ``captions`` (the pseudo-queries the retriever trains on) come from a captioner or a
  captions file when given; otherwise the human captions of *train* items only (val/test items
  get none, so no test query leaks into training). ``corpus.json`` says which in
  ``captions_from``;
- annotated items whose media file is missing are skipped and counted (``missing_media``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcmr.corpus.format import Query
from gcmr.errors import ConfigError, GcmrError

SPLITS = ("train", "val", "test")
HUMAN_TRAIN = "human-train-captions"
ANNOTATION_DIRS = ("", "annotations", "annotation", "ann", "data", "captions", "metadata")


@dataclass
class MediaRecord:
    """One item: its id, media file, split, and the human captions that become its queries."""

    id: str
    path: Path
    split: str
    texts: list[str] = field(default_factory=list)


@dataclass
class DatasetRecords:
    """The result of reading a dataset's annotations: present items and what was missing."""

    name: str
    modality: str
    root: Path
    records: list[MediaRecord]
    missing: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def split_counts(self) -> dict[str, int]:
        return dict(Counter(r.split for r in self.records))

    def limited(self, per_split: int | None) -> DatasetRecords:
        """The first ``per_split`` items of each split (for quick trials); None = all."""
        if per_split is None:
            return self
        seen: Counter[str] = Counter()
        keep = []
        for r in self.records:
            if seen[r.split] < per_split:
                keep.append(r)
                seen[r.split] += 1
        notes = dict(self.notes, limit_per_split=per_split)
        return DatasetRecords(self.name, self.modality, self.root, keep, self.missing, notes)

    def check(self) -> None:
        """Ids must be unique and every record must have a split and a file."""
        counts = Counter(r.id for r in self.records)
        dupes = [k for k, n in counts.items() if n > 1]
        if dupes:
            raise GcmrError(f"{self.name}: duplicate item ids {dupes[:5]} "
                            f"({len(dupes)} in all); the annotation lists a file twice")
        if not self.records:
            hint = (f" ({len(self.missing)} annotated items had no media file)"
                    if self.missing else "")
            raise GcmrError(f"{self.name}: no items with media under {self.root}{hint}")

    def queries(self) -> dict[str, list[Query]]:
        """Human captions as query splits (each relevant to its own item)."""
        out: dict[str, list[Query]] = {}
        for r in self.records:
            for text in r.texts:
                text = " ".join(text.split())
                if text:
                    out.setdefault(r.split, []).append(Query(text=text, relevant=(r.id,)))
        return out

    def train_captions(self) -> list[list[str]]:
        """Default item captions: human captions of train items only (no val/test leakage)."""
        return [[" ".join(t.split()) for t in r.texts if t.strip()] if r.split == "train" else []
                for r in self.records]


def find_file(root: Path, names: Sequence[str], *, override: str | Path | None = None,
              what: str, required: bool = True, extra_dirs: Sequence[str | Path] = ()
              ) -> Path | None:
    """Find an annotation file by name in ``extra_dirs``, ``root`` or a usual sub-folder of it
    (``annotations/``, ...); a missing required file is a :class:`GcmrError` naming the
    expected path."""
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise GcmrError(f"{path}: {what} not found")
        return path
    dirs = [Path(d) if Path(d).is_absolute() else root / d for d in extra_dirs]
    dirs += [root / sub if sub else root for sub in ANNOTATION_DIRS]
    for folder in dirs:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    if not required:
        return None
    alts = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
    subs = [str(Path(d)) + "/" for d in extra_dirs] + [d + "/" for d in ANNOTATION_DIRS if d]
    raise GcmrError(f"{root / names[0]}: {what} not found{alts}; looked in {root} and its "
                    f"{', '.join(subs)} sub-folders (pass --annotations to point at it)")


class MediaIndex:
    """Every media file under a root, found by relative path or by file stem.

    Datasets are distributed with different folder layouts (``flickr30k-images/``,
    ``val2014/``, ``clotho_audio_development/development/``, ``TrainValVideo/``, ...); looking
    files up by name makes every layout work without configuration. Built with one walk.
    """

    def __init__(self, root: Path, extensions: Iterable[str]) -> None:
        self.root = root
        exts = {e.lower() for e in extensions}
        self.by_stem: dict[str, Path] = {}
        self.by_name: dict[str, Path] = {}
        self.ambiguous: set[str] = set()
        if not root.is_dir():
            raise GcmrError(f"{root}: dataset root is not a directory")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.startswith(".") or os.path.splitext(fn)[1].lower() not in exts:
                    continue
                path = Path(dirpath) / fn
                stem = os.path.splitext(fn)[0]
                if stem in self.by_stem:
                    self.ambiguous.add(stem)
                else:
                    self.by_stem[stem] = path
                self.by_name.setdefault(fn, path)

    def __len__(self) -> int:
        return len(self.by_name)

    def find(self, *candidates: str, relative: Sequence[str] = ()) -> Path | None:
        """First hit among relative paths, then exact file names, then stems."""
        for rel in relative:
            path = self.root / rel
            if path.is_file():
                return path
        for cand in candidates:
            if cand in self.by_name:
                return self.by_name[cand]
        for cand in candidates:
            if cand in self.by_stem:
                return self.by_stem[cand]
            stem = os.path.splitext(cand)[0]
            if stem != cand and stem in self.by_stem:
                return self.by_stem[stem]
        return None


def split_name(raw: str, mapping: dict[str, str], *, where: str) -> str:
    if raw not in mapping:
        raise GcmrError(f"{where}: unknown split {raw!r} (expected one of {sorted(mapping)})")
    return mapping[raw]


def relative_source(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def require_modality(modality: str) -> str:
    if modality not in ("image", "audio", "video"):
        raise ConfigError(f"modality must be image, audio or video, got {modality!r}")
    return modality
