"""faiss indexes over item embeddings (the ``faiss`` extra): built from a memory map in chunks,
inner product on L2-normalized vectors (= cosine), any index factory string.

Typical factory strings: ``Flat`` (exact, the reference), ``HNSW32`` (graph, the usual
choice for low latency), ``IVF1024,PQ64`` (inverted lists + product quantization, the usual
choice for memory). IVF and PQ indexes are trained on a seeded sample of at most
``train_size`` rows. The index is rebuildable from the corpus, so it is written to disk only
on request (:func:`save_faiss_index`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.errors import ArtifactError, ConfigError
from gcmr.extras import require

DEFAULT_CHUNK_ROWS = 262_144


def _faiss() -> Any:
    return require("faiss", "faiss", purpose="faiss dense search backends")


def normalized_chunk(items: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of an [N, D] array (memmap, any float dtype) as L2-normalized
    contiguous float32 (a zero row stays zero)."""
    x = np.asarray(items[start:stop], dtype=np.float32)
    if x.base is not None or not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return x / norms


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalize the rows of a float32 matrix (copy)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


@dataclass
class FaissBuildInfo:
    factory: str
    num_items: int
    dim: int
    train_rows: int
    train_seconds: float
    add_seconds: float

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.add_seconds


def adapt_factory(factory: str, num_items: int) -> str:
    """Shrink ``IVF{nlist}`` so every list gets >= 39 training points (faiss's own minimum
    for k-means); a factory that already fits is returned unchanged."""
    import re

    match = re.search(r"IVF(\d+)", factory)
    if not match:
        return factory
    nlist = int(match.group(1))
    fit = max(1, min(nlist, num_items // 39))
    if fit == nlist:
        return factory
    return factory[:match.start(1)] + str(fit) + factory[match.end(1):]


def build_faiss_index(items: Any, factory: str, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                      train_size: int = 100_000, seed: int = 0, ef_search: int = 64,
                      nprobe: int = 16, rows: np.ndarray | None = None) -> tuple[Any, FaissBuildInfo]:
    """Build a faiss index with the inner-product metric over normalized ``items`` [N, D].

    ``rows`` (sorted corpus rows) builds it over that subset only (faiss ids are then
    positions in ``rows``). Memory: one chunk of ``chunk_rows`` float32 rows at a time plus
    the index itself.
    """
    faiss = _faiss()
    n_total = len(items) if rows is None else len(rows)
    dim = int(items.shape[1])
    if n_total == 0:
        raise ConfigError("cannot build a faiss index over zero items")
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"faiss index factory string {factory!r} is invalid for dim {dim}: "
                          f"{str(exc).strip().splitlines()[-1]}") from exc

    def chunk(start: int, stop: int) -> np.ndarray:
        if rows is None:
            return normalized_chunk(items, start, stop)
        return normalize_rows(np.asarray(items[rows[start:stop]], dtype=np.float32))

    t0 = time.perf_counter()
    train_rows = 0
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        take = min(n_total, train_size)
        pick = np.sort(rng.choice(n_total, take, replace=False))
        source = pick if rows is None else rows[pick]
        sample = normalize_rows(np.asarray(items[source], dtype=np.float32))
        try:
            index.train(sample)
        except RuntimeError as exc:
            raise ConfigError(f"faiss {factory!r} cannot be trained on {take} rows: "
                              f"{str(exc).strip().splitlines()[-1]}") from exc
        train_rows = take
    t1 = time.perf_counter()
    for start in range(0, n_total, chunk_rows):
        index.add(chunk(start, min(n_total, start + chunk_rows)))
    t2 = time.perf_counter()
    set_search_params(index, ef_search=ef_search, nprobe=nprobe)
    return index, FaissBuildInfo(factory=factory, num_items=n_total, dim=dim,
                                 train_rows=train_rows, train_seconds=t1 - t0,
                                 add_seconds=t2 - t1)


def set_search_params(index: Any, *, ef_search: int | None = None,
                      nprobe: int | None = None) -> None:
    """Set HNSW ``efSearch`` / IVF ``nprobe`` where the index has them (ignored elsewhere)."""
    faiss = _faiss()
    space = faiss.ParameterSpace()
    for name, value in (("efSearch", ef_search), ("nprobe", nprobe)):
        if value is None:
            continue
        try:
            space.set_index_parameter(index, name, int(value))
        except RuntimeError:
            pass  # this index kind has no such parameter


def faiss_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores float32 [Q, k], positions int64 [Q, k])`` with -inf / -1 padding."""
    q = normalize_rows(queries)
    kk = min(k, int(index.ntotal))
    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    rows = np.full((len(q), k), -1, dtype=np.int64)
    if kk == 0 or len(q) == 0:
        return scores, rows
    s, r = index.search(q, kk)
    valid = r >= 0
    scores[:, :kk] = np.where(valid, s, -np.inf)
    rows[:, :kk] = r
    return scores, rows


def index_nbytes(index: Any) -> int:
    """Bytes of the serialized index (what it takes to hold or ship it)."""
    return int(len(_faiss().serialize_index(index)))


def save_faiss_index(index: Any, path: str | Path) -> None:
    """Write the index with ``faiss.write_index`` via a temporary file and rename."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    _faiss().write_index(index, str(tmp))
    os.replace(tmp, path)


def load_faiss_index(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing faiss index file")
    try:
        return _faiss().read_index(str(path))
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: corrupted faiss index ({exc})") from exc
