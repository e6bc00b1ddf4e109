"""Resumable chunked jobs: embedding or captioning a million items must survive a crash at item
900k without starting over.

Work is split into fixed-size chunks of items; each finished chunk is written atomically
(temporary file + rename) to ``<out>.partial/chunk_000123.<ext>`` next to a ``state.json`` that
names the job (backend spec, options) and a hash of the item list. A restart with the same job
skips the finished chunks; a partial directory made by a different spec or item list is refused
(so vectors from two models never get mixed), unless ``restart=True`` discards it.

Sharding (:class:`Shard`): several processes share one job directory, each computing the
chunks it owns (chunk ``c`` belongs to shard ``c mod n``), so a million items embed on ``n``
GPUs or ``n`` jobs of an array. Under ``torchrun`` the ranks are the shards and rank 0 merges
after a barrier; with ``--shard i/n`` (independent jobs on a shared file system) each job
leaves its chunks and the merge is a last run without ``--shard`` (which also computes any
chunk still missing) or with ``--merge`` (which refuses to compute).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.artifacts import write_json
from gcmr.errors import ConfigError, GcmrError

STATE = "state.json"
STATE_VERSION = 1


def items_hash(keys: Iterable[str]) -> str:
    """Order-sensitive hash of the item list (ids, paths or texts)."""
    h = hashlib.sha256()
    for key in keys:
        h.update(key.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the chunks ``c`` with ``c % count == index``. ``ranks``:
    the shards are torchrun's ranks (they wait for each other; rank 0 merges); otherwise they
    are independent jobs and a shard of several (``count > 1``) never merges."""

    index: int = 0
    count: int = 1
    ranks: bool = False

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"--shard {self.index}/{self.count}: N must be >= 1")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"--shard {self.index}/{self.count}: I must be in "
                              f"0..{self.count - 1} (shards are numbered from 0)")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/n"`` (0-based ``i``, ``0 <= i < n``), as ``--shard`` takes it."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not match:
            raise ConfigError(f"--shard {text!r}: expected I/N with 0 <= I < N (e.g. 0/4)")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def resolve(cls, shard: Shard | None = None) -> Shard:
        """``shard`` (an explicit ``--shard``), else torchrun's rank of its world, else the
        whole job."""
        from gcmr.runtime import process_group

        w = process_group()
        if shard is not None and shard.count > 1:
            if w.distributed:
                raise ConfigError("--shard is for independent jobs; under torchrun every rank "
                                  "takes its own shard (drop --shard)")
            return shard
        return cls(w.rank, w.size, ranks=True) if w.distributed else cls()

    def owns(self, chunk: int) -> bool:
        return chunk % self.count == self.index

    @property
    def merges(self) -> bool:
        """Whether this process writes the merged result."""
        return self.count == 1 or (self.ranks and self.index == 0)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def partial_dir_for(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


class ChunkedJob:
    """A directory of finished chunks for ``num_items`` items processed ``chunk_size`` at a time."""

    def __init__(self, directory: str | Path, *, job: dict[str, Any], keys: Sequence[str],
                 chunk_size: int, restart: bool = False, shard: Shard | None = None) -> None:
        if chunk_size < 1:
            raise GcmrError(f"chunk size must be >= 1, got {chunk_size}")
        self.dir = Path(directory)
        self.num_items = len(keys)
        self.chunk_size = int(chunk_size)
        self.shard = shard or Shard()
        self.state = {"version": STATE_VERSION, "job": job, "num_items": self.num_items,
                      "chunk_size": self.chunk_size, "items_sha256": items_hash(keys)}
        # one of several independent shards restarts only its own chunks (the others may be
        # running); a whole job, or torchrun's rank 0 before the others open it, all of them
        own_restart = restart and self.shard.count > 1 and not self.shard.ranks
        if self.dir.exists() and restart and not own_restart:
            shutil.rmtree(self.dir)
        # shards may create the directory at the same moment: both write the same state
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / STATE).is_file():
            write_json(self.dir / STATE, self.state)
        self._check_existing()
        if own_restart:
            for index in self.owned():
                self.path(index, "npy").unlink(missing_ok=True)
                self.path(index, "jsonl").unlink(missing_ok=True)

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

    def owned(self) -> list[int]:
        """The chunks this process computes (all of them without sharding)."""
        return [i for i in range(self.num_chunks) if self.shard.owns(i)]

    def pending(self, ext: str) -> list[int]:
        """This shard's chunks not finished yet."""
        return [i for i in self.owned() if not self.done(i, ext)]

    def missing(self, ext: str) -> list[int]:
        """Every chunk (of any shard) not finished yet."""
        return [i for i in range(self.num_chunks) if not self.done(i, ext)]

    def owned_items(self) -> int:
        return sum(self.bounds(i)[1] - self.bounds(i)[0] for i in self.owned())

    def done_items(self, ext: str) -> int:
        """Finished items of this shard's chunks."""
        return sum(self.bounds(i)[1] - self.bounds(i)[0]
                   for i in self.owned() if self.done(i, ext))

    def require_complete(self, ext: str) -> None:
        """Refuse to merge while chunks are missing, naming them."""
        missing = self.missing(ext)
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise GcmrError(f"{self.dir}: {len(missing)} of {self.num_chunks} chunks are not "
                            f"finished (chunk {shown}); run the --shard jobs that own them "
                            f"(chunk c belongs to shard c mod N), or run without --shard / "
                            f"--merge to compute them here")

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


def open_job(directory: str | Path, *, job: dict[str, Any], keys: Sequence[str],
             chunk_size: int, restart: bool = False, shard: Shard | None = None) -> ChunkedJob:
    """:class:`ChunkedJob` for ``shard``; under torchrun rank 0 opens (and, with ``restart``,
    clears) the directory before the other ranks open it."""
    shard = shard or Shard()
    if not shard.ranks:
        return ChunkedJob(directory, job=job, keys=keys, chunk_size=chunk_size,
                          restart=restart, shard=shard)
    from gcmr.runtime import barrier

    opened = None
    if shard.index == 0:
        opened = ChunkedJob(directory, job=job, keys=keys, chunk_size=chunk_size,
                            restart=restart, shard=shard)
    barrier()
    return opened or ChunkedJob(directory, job=job, keys=keys, chunk_size=chunk_size,
                                shard=shard)


@contextlib.contextmanager
def merging(shard: Shard) -> Iterator[bool]:
    """The merge step of a sharded job: yields whether this process writes the result. Under
    torchrun the ranks first wait for each other (every chunk is finished) and then for rank 0's
    merge, so every rank returns once the result is in place."""
    if shard.ranks:
        from gcmr.runtime import barrier

        barrier()
        yield shard.merges
        barrier()
    else:
        yield shard.merges


def shard_summary(job: ChunkedJob, shard: Shard, ext: str, **fields: Any) -> dict[str, Any]:
    """What a shard that does not merge reports: its chunks, and how to merge."""
    return {**fields, "shard": str(shard), "shard_items": job.owned_items(),
            "shard_chunks": len(job.owned()), "chunks_missing": len(job.missing(ext)),
            "merged": False,
            "next": "when every shard has finished, run the same command without --shard "
                    "(or with --merge) to write the result"}
