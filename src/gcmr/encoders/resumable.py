"""Resumable chunked jobs: embedding or captioning a million items must survive a crash at item
900k without starting over.

Work is split into fixed-size chunks of items; each finished chunk is written atomically
(temporary file + rename) to ``<out>.partial/chunk_000123.<ext>`` next to a ``state.json`` that
names the job (backend spec, options) and a hash of the item list. A restart with the same job
skips the finished chunks; a partial directory made by a different spec or item list is refused
(so vectors from two models never get mixed), unless ``restart=True`` discards it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.artifacts import write_json
from gcmr.errors import GcmrError

STATE = "state.json"
STATE_VERSION = 1


def items_hash(keys: Iterable[str]) -> str:
    """Order-sensitive hash of the item list (ids, paths or texts)."""
    h = hashlib.sha256()
    for key in keys:
        h.update(key.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


def partial_dir_for(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


class ChunkedJob:
    """A directory of finished chunks for ``num_items`` items processed ``chunk_size`` at a time."""

    def __init__(self, directory: str | Path, *, job: dict[str, Any], keys: Sequence[str],
                 chunk_size: int, restart: bool = False) -> None:
        if chunk_size < 1:
            raise GcmrError(f"chunk size must be >= 1, got {chunk_size}")
        self.dir = Path(directory)
        self.num_items = len(keys)
        self.chunk_size = int(chunk_size)
        self.state = {"version": STATE_VERSION, "job": job, "num_items": self.num_items,
                      "chunk_size": self.chunk_size, "items_sha256": items_hash(keys)}
        if self.dir.exists() and restart:
            shutil.rmtree(self.dir)
        if self.dir.exists():
            self._check_existing()
        else:
            self.dir.mkdir(parents=True)
            write_json(self.dir / STATE, self.state)

    def _check_existing(self) -> None:
        path = self.dir / STATE
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise GcmrError(f"{path}: unreadable state of a partial job ({exc}); delete "
                            f"{self.dir} or pass --restart") from exc
        diffs = [k for k in ("version", "job", "num_items", "chunk_size", "items_sha256")
                 if old.get(k) != self.state.get(k)]
        if diffs:
            detail = "; ".join(f"{k}: partial has {old.get(k)!r}, this run {self.state.get(k)!r}"
                               for k in diffs if k != "items_sha256")
            if "items_sha256" in diffs:
                detail = (detail + "; " if detail else "") + "the item list differs"
            raise GcmrError(f"{self.dir} was made by a different job ({detail}); delete it or "
                            f"pass --restart to start over")

    @property
    def num_chunks(self) -> int:
        return (self.num_items + self.chunk_size - 1) // self.chunk_size

    def bounds(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(self.num_items, start + self.chunk_size)

    def path(self, index: int, ext: str) -> Path:
        return self.dir / f"chunk_{index:06d}.{ext}"

    def done(self, index: int, ext: str) -> bool:
        return self.path(index, ext).is_file()

    def pending(self, ext: str) -> list[int]:
        return [i for i in range(self.num_chunks) if not self.done(i, ext)]

    def done_items(self, ext: str) -> int:
        return sum(self.bounds(i)[1] - self.bounds(i)[0]
                   for i in range(self.num_chunks) if self.done(i, ext))

    def _tmp(self, index: int, ext: str) -> Path:
        return self.dir / f".chunk_{index:06d}.{uuid.uuid4().hex[:8]}.tmp.{ext}"

    def save_array(self, index: int, arr: np.ndarray) -> None:
        start, stop = self.bounds(index)
        if arr.shape[0] != stop - start:
            raise GcmrError(f"chunk {index}: got {arr.shape[0]} rows, expected {stop - start}")
        tmp = self._tmp(index, "npy")
        np.save(tmp, np.ascontiguousarray(arr, dtype=np.float32))
        os.replace(tmp, self.path(index, "npy"))

    def load_array(self, index: int) -> np.ndarray:
        return np.load(self.path(index, "npy"), allow_pickle=False)

    def save_rows(self, index: int, rows: Sequence[Any]) -> None:
        start, stop = self.bounds(index)
        if len(rows) != stop - start:
            raise GcmrError(f"chunk {index}: got {len(rows)} rows, expected {stop - start}")
        tmp = self._tmp(index, "jsonl")
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path(index, "jsonl"))

    def load_rows(self, index: int) -> list[Any]:
        with self.path(index, "jsonl").open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
