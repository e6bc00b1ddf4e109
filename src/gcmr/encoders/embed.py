"""Embedding many items, resumably: chunks of ``chunk_size`` items, each encoded in batches of
the encoder's batch size with a progress bar, stored as they finish (see
:mod:`gcmr.encoders.resumable`) and assembled into one ``.npy`` at the end.

With a :class:`~gcmr.encoders.resumable.Shard` a process computes only its chunks (torchrun
ranks or ``--shard i/n`` jobs); ``merge_only`` computes nothing and assembles what the shards
left, refusing while a chunk is missing."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.encoders.base import Encoder, batched, l2_normalize
from gcmr.encoders.resumable import (
    ChunkedJob,
    Shard,
    merging,
    open_job,
    partial_dir_for,
    shard_summary,
)
from gcmr.errors import GcmrError
from gcmr.progress import progress

DEFAULT_CHUNK = 1024


Compute = Callable[[int, int, Callable[[int], None]], np.ndarray]


def _run_array_job(job: ChunkedJob, *, desc: str, compute: Compute, dim: int,
                   show_progress: bool, merge_only: bool = False) -> ChunkedJob:
    """Compute every pending chunk of this shard with ``compute(start, stop, advance) ->
    [stop-start, dim]`` (``advance(n)`` moves the progress bar); ``merge_only``: none, but
    every chunk must be finished."""
    if merge_only:
        job.require_complete("npy")
        return job
    pending = job.pending("npy")
    done = job.done_items("npy")
    if job.shard.count > 1:
        desc = f"{desc} shard {job.shard}"
    # under torchrun only rank 0 draws its bar (one terminal for all ranks)
    show_progress = show_progress and (not job.shard.ranks or job.shard.index == 0)
    with progress(disable=not show_progress) as bar:
        info = f"resumed {done:,} done" if done else ""
        task = bar.add_task(desc, total=job.owned_items(), completed=done, info=info)
        for index in pending:
            start, stop = job.bounds(index)
            arr = compute(start, stop, lambda n: bar.advance(task, n))
            if arr.shape != (stop - start, dim):
                raise GcmrError(f"{desc}: encoder returned {arr.shape}, expected "
                                f"{(stop - start, dim)}")
            if not np.isfinite(arr).all():
                bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0]) + start
                raise GcmrError(f"{desc}: non-finite embedding for item #{bad}")
            job.save_array(index, arr)
    return job


def embed_items_job(
    encoder: Encoder,
    *,
    ids: Sequence[str],
    paths: Sequence[str | Path],
    partial_dir: str | Path,
    chunk_size: int = DEFAULT_CHUNK,
    restart: bool = False,
    show_progress: bool = True,
    shard: Shard | None = None,
    merge_only: bool = False,
) -> ChunkedJob:
    """Embed the media of every item (of ``shard``'s chunks) into the chunk directory
    ``partial_dir``; finished chunks of an earlier run with the same encoder and items are
    kept."""
    if len(ids) != len(paths):
        raise GcmrError(f"{len(ids)} ids but {len(paths)} paths")
    keys = [f"{i}\t{p}" for i, p in zip(ids, paths)]
    job = open_job(partial_dir, job={"kind": "embed-media", "encoder": encoder.name,
                                     "modality": encoder.modality,
                                     "frames": getattr(encoder, "frames", None),
                                     "dim": encoder.dim},
                   keys=keys, chunk_size=chunk_size, restart=restart, shard=shard)
    step = max(1, encoder.batch_size)

    def compute(start: int, stop: int, advance: Callable[[int], None]) -> np.ndarray:
        outs = []
        for b0 in range(start, stop, step):
            b1 = min(stop, b0 + step)
            outs.append(np.asarray(encoder.encode_items(ids[b0:b1], paths[b0:b1]), np.float32))
            advance(b1 - b0)
        return np.concatenate(outs, axis=0)

    return _run_array_job(job, desc=f"embed ({encoder.name})", compute=compute,
                          dim=encoder.dim, show_progress=show_progress, merge_only=merge_only)


def embed_captions_job(
    encoder: Encoder,
    captions: Sequence[Sequence[str]],
    *,
    partial_dir: str | Path,
    chunk_size: int = DEFAULT_CHUNK,
    restart: bool = False,
    show_progress: bool = True,
    shard: Shard | None = None,
    merge_only: bool = False,
) -> ChunkedJob:
    """Per item, the normalized mean of its captions' text embeddings (AVG's caption-side
    embedding; ``caption_embeddings.npy``). Items without captions get a zero row."""
    keys = ["\x1f".join(c) for c in captions]
    job = open_job(partial_dir, job={"kind": "embed-captions", "encoder": encoder.name,
                                     "dim": encoder.dim},
                   keys=keys, chunk_size=chunk_size, restart=restart, shard=shard)

    def compute(start: int, stop: int, advance: Callable[[int], None]) -> np.ndarray:
        out = np.zeros((stop - start, encoder.dim), dtype=np.float32)
        texts = [(i, t) for i in range(start, stop) for t in captions[i]]
        step = max(1, encoder.batch_size)
        sums = np.zeros_like(out)
        counts = np.zeros(stop - start, dtype=np.int64)
        for batch in batched(texts, step * 4):
            emb = encoder.encode_text([t for _, t in batch])
            rows = np.array([i - start for i, _ in batch])
            np.add.at(sums, rows, emb)
            np.add.at(counts, rows, 1)
        has = counts > 0
        out[has] = l2_normalize(sums[has] / counts[has, None])
        advance(stop - start)
        return out

    return _run_array_job(job, desc=f"embed captions ({encoder.name})", compute=compute,
                          dim=encoder.dim, show_progress=show_progress, merge_only=merge_only)


def iter_chunks(job: ChunkedJob) -> Iterator[np.ndarray]:
    """The finished arrays of a job, in item order."""
    for index in range(job.num_chunks):
        if not job.done(index, "npy"):
            raise GcmrError(f"{job.dir}: chunk {index} is missing; run the job again")
        yield job.load_array(index)


def assemble(job: ChunkedJob, out: str | Path, *, dim: int, dtype: str = "float32",
             remove_partial: bool = True) -> Path:
    """Concatenate the chunks into ``out`` (.npy [N, dim]) via a temporary file and rename."""
    job.require_complete("npy")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}.npy")
    try:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(dtype),
                                        shape=(job.num_items, dim))
        row = 0
        for chunk in iter_chunks(job):
            arr[row:row + len(chunk)] = chunk
            row += len(chunk)
        arr.flush()
        del arr
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if remove_partial:
        job.remove()
    return out


def embed_to_file(
    encoder: Encoder,
    *,
    ids: Sequence[str],
    paths: Sequence[str | Path],
    out: str | Path,
    chunk_size: int = DEFAULT_CHUNK,
    restart: bool = False,
    show_progress: bool = True,
    write_ids: bool = True,
    shard: Shard | None = None,
    merge_only: bool = False,
) -> dict[str, Any]:
    """Embed media files into ``out`` (.npy float32 [N, D]) and ``out.ids.txt``; resumable from
    ``<out>.partial/``. Returns a summary.

    Sharded (``shard``, or torchrun's ranks: :meth:`Shard.resolve`), each process embeds its
    chunks; rank 0, or a later run without ``shard``, writes ``out`` once all are finished
    (``merge_only``: only that)."""
    out = Path(out)
    shard = Shard.resolve(shard)
    job = embed_items_job(encoder, ids=ids, paths=paths, partial_dir=partial_dir_for(out),
                          chunk_size=chunk_size, restart=restart, show_progress=show_progress,
                          shard=shard, merge_only=merge_only)
    summary = {"embeddings": str(out), "items": len(ids), "dim": encoder.dim,
               "encoder": encoder.name}
    if not shard.merges and not shard.ranks:
        return shard_summary(job, shard, "npy", **summary)
    ids_path = None
    with merging(shard) as merge:
        if merge:
            assemble(job, out, dim=encoder.dim)
            if write_ids:
                from gcmr.encoders.precomputed import default_ids_path

                ids_path = default_ids_path(out)
                tmp = ids_path.with_name(f".{ids_path.name}.tmp-{uuid.uuid4().hex[:8]}")
                tmp.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
                os.replace(tmp, ids_path)
    if write_ids and ids_path is None:  # another rank wrote them
        from gcmr.encoders.precomputed import default_ids_path

        ids_path = default_ids_path(out)
    return {**summary, "ids": str(ids_path) if ids_path else None,
            **({"ranks": shard.count} if shard.ranks else {})}
