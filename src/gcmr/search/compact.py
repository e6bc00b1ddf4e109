"""Compact item vectors for the hybrid rerank, kept in the model directory.

The hybrid search scores each candidate by the cosine of the query head's vector and the
item's embedding (:mod:`gcmr.search.rerank`). By default those rows are read from the corpus's
memory-mapped ``embeddings.npy`` (4 D bytes per item in float32). ``gcmr compress-vectors
MODEL`` stores a compact copy in the model directory instead, so hybrid search needs neither
the corpus nor its float rows:

- ``pq``: product quantization (faiss ``ProductQuantizer``, ``m`` sub-quantizers of 8 bits,
  so ``m`` bytes per item; ``m`` divides D, default D / 4). The items are L2-normalized
  before training and encoding; the codebook is trained on a seeded sample of at most
  ``train_size`` rows (bounded memory) and the rows are encoded in chunks. A candidate's score
  is the asymmetric distance of the float query against its codes, ``q . x_hat`` (one lookup
  table per query and sub-quantizer), divided by ``|x_hat|`` (itself a sum of per-code
  squared norms): the cosine of the query and the re-normalized decoded vector, without
  decoding. With fewer training rows than the 256 centroids of a sub-quantizer, the
  centroids are the training rows themselves (exact for them).
  ``rotation = "opq"`` first learns an orthogonal rotation of the items (faiss
  ``OPQMatrix``, which balances the sub-spaces; cosines are unchanged by it) and quantizes
  the rotated items; queries are rotated once before scoring. On the 5k synthetic world
  (hybrid R@1, 2,500 test queries; benchmarks/results/compact_vectors) it takes 64 bytes per
  item from 0.671 to 0.756 and 128 bytes from 0.736 to 0.768 (float32 0.775; PQ without
  rotation needs 256 bytes for 0.768), for a D x D float32 matrix in the model directory and
  minutes of training (4 min for 5,000 items on one thread, against 27 s).
- ``float16``: the normalized rows in half precision (2 D bytes per item).

Files (names in :mod:`gcmr.model.io`, checksummed by the manifest like the weights)::

    item_codes.npy              [N, m] uint8 PQ codes, or [N, D] float16 unit rows
    item_codebook.safetensors   pq only: "centroids" [m, 256, D / m] float32, and with OPQ
                                "rotation" [D, D] float32 (rotated = item @ rotation.T)

and the manifest records ``rerank.item_vectors = "compact"`` and ``compact_vectors``
(:class:`CompactRecord`: codec, dim, rows, m, bytes per item, the training sample). Live
updates (:func:`gcmr.search.updates.add_to`) encode added items with the same codebook.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcmr.config import JsonConfig
from gcmr.errors import ArtifactError, ConfigError

CODECS = ("pq", "float16")
COMPACT_FIELD = "compact_vectors"  # manifest field (CompactRecord)
PQ_BITS = 8
PQ_CENTROIDS = 1 << PQ_BITS
DEFAULT_TRAIN_SIZE = 65_536  # faiss k-means uses at most 256 points per centroid = 65,536
ROTATIONS = ("none", "opq")
# default PQ m = D / 4 (256 bytes per item at D = 1024, 16x smaller than float32): on the 5k
# world hybrid R@1 0.768 vs 0.775 exact, where D / 8 loses 0.04 and D / 16 0.10 without a
# rotation (benchmarks/results/compact_vectors)
DEFAULT_DIMS_PER_CODE = 4
OPQ_ITERATIONS = 20  # faiss OPQMatrix alternations (faiss's default 50 costs 2.5x the time)
CHUNK_ROWS = 16_384  # rows normalized / encoded per step
ENCODE_FLOATS = 1 << 24  # distance-table floats per encoding step (64 MiB)


@dataclass
class CompactConfig(JsonConfig):
    """How ``gcmr compress-vectors`` compresses a model's item vectors."""

    codec: str = "pq"  # pq | float16
    m: int = 0  # PQ sub-quantizers = bytes per item; must divide D (0 = D / 4, or below)
    train_size: int = DEFAULT_TRAIN_SIZE  # rows sampled (seeded) to train the PQ codebook
    seed: int = 0
    rotation: str = "none"  # pq: none | opq (a learned rotation before quantizing)

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ConfigError(f"compact codec must be one of {list(CODECS)}, got "
                              f"{self.codec!r}")
        for name in ("m", "train_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"compact {name} must be a whole number >= 0, got {value!r}")
        if self.train_size < 1:
            raise ConfigError(f"compact train_size must be >= 1, got {self.train_size}")
        if self.rotation not in ROTATIONS:
            raise ConfigError(f"compact rotation must be one of {list(ROTATIONS)}, got "
                              f"{self.rotation!r}")
        if self.codec != "pq" and (self.m or self.rotation != "none"):
            raise ConfigError(f"m and rotation (PQ sub-quantizers) apply to the pq codec, not "
                              f"{self.codec!r}")

    def sub_quantizers(self, dim: int) -> int:
        """The PQ ``m`` for item dimension ``dim`` (checked to divide it)."""
        if not self.m:
            m = max(1, dim // DEFAULT_DIMS_PER_CODE)
            while dim % m:
                m -= 1
            return m
        if self.m > dim or dim % self.m:
            near = [d for d in range(1, dim + 1) if dim % d == 0]
            near = sorted(near, key=lambda d: abs(d - self.m))[:3]
            raise ConfigError(f"PQ m = {self.m} must divide the item dimension {dim} (each "
                              f"sub-quantizer takes D / m dimensions); nearest that do: "
                              f"{sorted(near)}")
        return self.m


@dataclass
class CompactRecord(JsonConfig):
    """The manifest's ``compact_vectors``: what the compact files hold and how they were
    made."""

    codec: str
    dim: int
    rows: int  # every row of the model's index (training corpus, then added items)
    bytes_per_item: int  # of the codes (the codebook is shared: codebook_bytes)
    corpus_fingerprint: str  # the training corpus the first rows were read from
    m: int = 0  # pq: sub-quantizers
    nbits: int = PQ_BITS
    rotation: str = "none"  # pq: none | opq
    codebook_bytes: int = 0  # centroids (and rotation)
    train_rows: int = 0  # rows the PQ codebook was trained on
    train_size: int = DEFAULT_TRAIN_SIZE
    seed: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.codec not in CODECS or self.rotation not in ROTATIONS:
            raise ConfigError(f"codec must be one of {list(CODECS)} and rotation one of "
                              f"{list(ROTATIONS)}, got {self.codec!r} and {self.rotation!r}")
        if self.dim < 1 or self.rows < 0 or (self.codec == "pq" and (
                self.m < 1 or self.dim % self.m or self.nbits != PQ_BITS)):
            raise ConfigError(f"inconsistent sizes (dim {self.dim}, rows {self.rows}, m "
                              f"{self.m}, nbits {self.nbits})")


def unit_rows(block: Any) -> np.ndarray:
    """Rows as L2-normalized contiguous float32 (a zero row stays zero)."""
    x = np.ascontiguousarray(np.asarray(block, dtype=np.float32))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def train_codebook(items: Any, m: int, *, train_size: int = DEFAULT_TRAIN_SIZE,
                   seed: int = 0, rotation: str = "none"
                   ) -> tuple[np.ndarray, np.ndarray | None, int]:
    """``(codebook, rotation, rows)``: a PQ codebook ``[m, 256, D / m]`` float32 of the
    L2-normalized rows of ``items`` ([N, D], e.g. a memory map: only a seeded sample of at
    most ``train_size`` rows is read), with ``rotation = "opq"`` the learned rotation
    ``[D, D]`` it quantizes in (else None), and the number of rows it was trained on."""
    n, dim = (int(s) for s in items.shape)
    if n < 1 or dim % m:
        raise ConfigError(f"cannot train {m} sub-quantizers on {n} items of dimension {dim}")
    rows = np.arange(n) if n <= train_size else np.sort(
        np.random.default_rng(seed).choice(n, size=train_size, replace=False))
    x = np.empty((len(rows), dim), dtype=np.float32)
    for a in range(0, len(rows), CHUNK_ROWS):
        x[a:a + CHUNK_ROWS] = unit_rows(items[rows[a:a + CHUNK_ROWS]])
    dsub = dim // m
    matrix = None
    if rotation == "opq":
        if len(rows) < PQ_CENTROIDS:
            raise ConfigError(f"an OPQ rotation needs at least {PQ_CENTROIDS} training items, "
                              f"got {len(rows)}; use rotation none")
        matrix = _faiss().OPQMatrix(dim, m)
        matrix.niter = OPQ_ITERATIONS
        matrix.train(x)
        matrix = _faiss().vector_to_array(matrix.A).astype(np.float32).reshape(dim, dim)
        x = unit_rows(x @ matrix.T)
    elif rotation != "none":
        raise ConfigError(f"rotation must be one of {list(ROTATIONS)}, got {rotation!r}")
    if len(rows) < PQ_CENTROIDS:  # fewer rows than centroids: the rows are the centroids
        sub = x.reshape(len(rows), m, dsub).transpose(1, 0, 2)
        book = np.ascontiguousarray(sub[:, np.arange(PQ_CENTROIDS) % len(rows)])
        return book, matrix, len(rows)
    faiss = _faiss()
    pq = faiss.ProductQuantizer(dim, m, PQ_BITS)
    pq.cp.seed = int(seed)
    pq.cp.min_points_per_centroid = 1  # a small corpus is fine; faiss would warn per part
    pq.train(x)
    centroids = faiss.vector_to_array(pq.centroids).astype(np.float32)
    return centroids.reshape(m, PQ_CENTROIDS, dsub), matrix, len(rows)


def _faiss() -> Any:
    from gcmr.extras import require

    return require("faiss", "faiss", purpose="training a product-quantization codebook")


def pq_encode(codebook: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Codes ``[n, m]`` uint8 of unit rows ``x`` [n, D]: the nearest centroid of each
    sub-vector (what faiss ``compute_codes`` gives), in chunks of bounded memory."""
    m, k, dsub = codebook.shape
    sq = (codebook ** 2).sum(-1)[:, None, :]  # [m, 1, k]
    book_t = np.ascontiguousarray(codebook.transpose(0, 2, 1))  # [m, dsub, k]
    out = np.empty((len(x), m), dtype=np.uint8)
    step = max(1, ENCODE_FLOATS // (m * k))
    for a in range(0, len(x), step):
        sub = x[a:a + step].reshape(-1, m, dsub).transpose(1, 0, 2)  # [m, n, dsub]
        out[a:a + step] = (sq - 2.0 * np.matmul(sub, book_t)).argmin(-1).T
    return out


class CompactItemVectors:
    """Item vectors for the hybrid rerank from compact codes: ``codes`` [N, m] uint8 with a
    PQ ``codebook`` [m, 256, D / m] (and an optional orthogonal ``rotation`` [D, D] the items
    were quantized in), or [N, D] float16 unit rows (``codebook`` None).
    ``codes`` is row-indexable (a memory map, or :class:`~gcmr.search.rerank.StackedRows`
    once items were added); only the candidates' rows are read. The same interface as
    :class:`~gcmr.search.rerank.ItemVectors` (``query``, ``cosines``)."""

    def __init__(self, codes: Any, codebook: np.ndarray | None = None,
                 rotation: np.ndarray | None = None) -> None:
        if getattr(codes, "ndim", 0) != 2:
            raise ConfigError(f"item codes must be [N, width], got shape "
                              f"{list(getattr(codes, 'shape', []))}")
        width = int(codes.shape[1])
        if codebook is None:
            if np.dtype(codes.dtype) != np.float16:
                raise ConfigError(f"float16 item vectors must be float16, got {codes.dtype}")
            self.dim = width
        else:
            codebook = np.asarray(codebook, dtype=np.float32)
            if codebook.ndim != 3 or codebook.shape[0] != width or \
                    codebook.shape[1] != PQ_CENTROIDS or not np.isfinite(codebook).all():
                raise ConfigError(f"a PQ codebook must be finite [m = {width}, "
                                  f"{PQ_CENTROIDS}, D / m], got {list(codebook.shape)}")
            if np.dtype(codes.dtype) != np.uint8:
                raise ConfigError(f"PQ codes must be uint8, got {codes.dtype}")
            self.dim = width * int(codebook.shape[2])
            self._book_t = np.ascontiguousarray(codebook.transpose(0, 2, 1))  # [m, dsub, k]
            self._sq = (codebook ** 2).sum(-1)  # [m, k]: squared norms of the centroids
        if rotation is not None:
            rotation = np.ascontiguousarray(rotation, dtype=np.float32)
            if codebook is None or rotation.shape != (self.dim, self.dim) or \
                    not np.isfinite(rotation).all():
                raise ConfigError(f"a PQ rotation must be finite [{self.dim}, {self.dim}] "
                                  f"(with a codebook), got {list(rotation.shape)}")
        self.codes = codes
        self.codebook = codebook
        self.rotation = rotation

    @property
    def codec(self) -> str:
        return "float16" if self.codebook is None else "pq"

    @property
    def bytes_per_item(self) -> int:
        return int(self.codes.shape[1]) * np.dtype(self.codes.dtype).itemsize

    @property
    def codebook_bytes(self) -> int:
        return sum(int(a.nbytes) for a in (self.codebook, self.rotation) if a is not None)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @staticmethod
    def query(model: Any, enc: Any) -> torch.Tensor:
        """The query vectors these items are scored against: the model's query head."""
        return model.query_vectors(enc)

    def encode(self, embeddings: Any) -> np.ndarray:
        """The codes of item ``embeddings`` [A, D] (normalized first), in memory."""
        if getattr(embeddings, "ndim", 0) != 2 or embeddings.shape[1] != self.dim:
            raise ConfigError(f"item embeddings to encode must be [A, {self.dim}], got "
                              f"{list(getattr(embeddings, 'shape', []))}")
        width = self.codes.shape[1]
        out = np.empty((len(embeddings), width), dtype=self.codes.dtype)
        for a in range(0, len(embeddings), CHUNK_ROWS):
            x = unit_rows(embeddings[a:a + CHUNK_ROWS])
            if self.rotation is not None:
                x = unit_rows(x @ self.rotation.T)
            out[a:a + CHUNK_ROWS] = x.astype(np.float16) if self.codebook is None \
                else pq_encode(self.codebook, x)
        return out

    def plus(self, embeddings: Any) -> CompactItemVectors:
        """These vectors followed by the encoded ``embeddings`` (items added live)."""
        from gcmr.search.rerank import StackedRows

        parts = self.codes.parts if isinstance(self.codes, StackedRows) else [self.codes]
        return CompactItemVectors(StackedRows([*parts, self.encode(embeddings)]),
                                  self.codebook, self.rotation)

    def decode(self, rows: Any) -> np.ndarray:
        """The reconstructed unit vectors [len(rows), D] float32 of item ``rows`` (not
        re-normalized)."""
        codes = np.asarray(self.codes[np.asarray(rows, dtype=np.int64)])
        if self.codebook is None:
            return codes.astype(np.float32)
        m = codes.shape[1]
        out = self.codebook[np.arange(m), codes.astype(np.intp)].reshape(len(codes), -1)
        return out if self.rotation is None else out @ self.rotation  # back to item space

    def cosines(self, queries: torch.Tensor, rows: np.ndarray, *, chunk: int = 64
                ) -> np.ndarray:
        """Cosine [Q, C] of normalized ``queries`` [Q, D] with the re-normalized decoded
        vectors of items ``rows`` [Q, C] (-inf where a row is -1 padding)."""
        if self.codebook is None:
            from gcmr.search.rerank import ItemVectors

            return ItemVectors(self.codes).cosines(queries, rows)
        valid = rows >= 0
        out = np.full(rows.shape, -np.inf, dtype=np.float32)
        uniq = np.unique(rows[valid])
        if len(uniq) == 0:
            return out
        codes = np.asarray(self.codes[uniq]).astype(np.intp)  # reads only these rows
        m = codes.shape[1]
        subs = np.arange(m)
        inv = (1.0 / np.maximum(np.sqrt(self._sq[subs, codes].sum(axis=1)), 1e-12))
        flat = codes + subs * PQ_CENTROIDS  # offsets into one query's [m * 256] table
        pos = np.searchsorted(uniq, np.where(valid, rows, uniq[0]))
        q = queries.detach().float().cpu().numpy()
        if self.rotation is not None:
            q = q @ self.rotation.T
        scores = np.empty(rows.shape, dtype=np.float32)
        for a in range(0, len(q), chunk):
            b = min(a + chunk, len(q))
            lut = np.matmul(q[a:b].reshape(b - a, m, -1).transpose(1, 0, 2),
                            self._book_t)  # [m, q, k]: q_j . centroid_j,k
            lut = np.ascontiguousarray(lut.transpose(1, 0, 2)).reshape(b - a, -1)
            for i in range(b - a):  # a 1-D take per query: faster than one 3-D gather
                scores[a + i] = np.take(lut[i], flat[pos[a + i]]).sum(axis=1)
        scores *= inv[pos]
        out[valid] = scores[valid]
        return out


# ----------------------------------------------------------------------------- on disk


def write_compact(out_dir: Path, items: Any, config: CompactConfig, *,
                  corpus_fingerprint: str, show_progress: bool = False) -> CompactRecord:
    """Train (pq) and write the compact files of ``items`` [N, D] (row-indexable, read in
    chunks) into ``out_dir``; returns the record for the manifest."""
    from gcmr.artifacts import save_tensors
    from gcmr.model.io import ITEM_CODEBOOK, ITEM_CODES
    from gcmr.progress import progress

    started = time.perf_counter()
    n, dim = (int(s) for s in items.shape)
    if n < 1:
        raise ConfigError("no item vectors to compress")
    if config.codec == "pq":
        m = config.sub_quantizers(dim)
        codebook, rotation, train_rows = train_codebook(
            items, m, train_size=config.train_size, seed=config.seed, rotation=config.rotation)
        tensors = {"centroids": codebook} if rotation is None else \
            {"centroids": codebook, "rotation": rotation}
        save_tensors(out_dir / ITEM_CODEBOOK, {k: torch.from_numpy(v) for k, v in tensors.items()})
        width, dtype = m, np.uint8
    else:
        codebook, rotation, train_rows, m = None, None, 0, 0
        width, dtype = dim, np.float16
    codes = np.lib.format.open_memmap(out_dir / ITEM_CODES, mode="w+", dtype=dtype,
                                      shape=(n, width))
    encoder = CompactItemVectors(np.zeros((0, width), dtype=dtype), codebook, rotation)
    with progress(disable=not show_progress) as bar:
        task = bar.add_task("encode item vectors", total=n, info=config.codec)
        for a in range(0, n, CHUNK_ROWS):
            b = min(a + CHUNK_ROWS, n)
            codes[a:b] = encoder.encode(items[np.arange(a, b)])
            bar.update(task, advance=b - a)
    codes.flush()
    del codes
    return CompactRecord(codec=config.codec, dim=dim, rows=n,
                         bytes_per_item=width * np.dtype(dtype).itemsize,
                         corpus_fingerprint=corpus_fingerprint, m=m,
                         rotation=config.rotation, codebook_bytes=encoder.codebook_bytes,
                         train_rows=train_rows, train_size=config.train_size,
                         seed=config.seed, seconds=round(time.perf_counter() - started, 3))


def compact_record(model_dir: str | Path, manifest: dict[str, Any]) -> CompactRecord | None:
    """The manifest's checked ``compact_vectors`` record, or None when it has none."""
    data = manifest.get(COMPACT_FIELD)
    if data is None:
        return None
    return CompactRecord.from_dict(data, where=f"{Path(model_dir) / 'manifest.json'}: "
                                               f"{COMPACT_FIELD}")


def open_compact(model_dir: str | Path, manifest: dict[str, Any], *,
                 num_rows: int, dim: int) -> CompactItemVectors:
    """The compact item vectors a model directory records (codes memory-mapped), checked
    against the index's ``num_rows`` and the query head's ``dim``; a missing, unreadable or
    mismatched file is an :class:`ArtifactError` naming it."""
    from gcmr.artifacts import load_tensors
    from gcmr.model.io import ITEM_CODEBOOK, ITEM_CODES

    model_dir = Path(model_dir)
    hint = (f"run `gcmr compress-vectors {model_dir}` again, or `--codec none` to score "
            f"with the corpus's embeddings")
    record = compact_record(model_dir, manifest)
    if record is None:
        raise ArtifactError(f"{model_dir / 'manifest.json'}: rerank item_vectors is "
                            f"'compact' but the manifest records no {COMPACT_FIELD}; {hint}")
    path = model_dir / ITEM_CODES
    try:
        codes = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ArtifactError(f"{path}: missing or unreadable compact item vectors ({exc}); "
                            f"{hint}") from exc
    codebook = rotation = None
    if record.codec == "pq":
        book_path = model_dir / ITEM_CODEBOOK
        if not book_path.is_file():
            raise ArtifactError(f"{book_path}: missing PQ codebook; {hint}")
        tensors = load_tensors(book_path)
        wanted = {"centroids"} | ({"rotation"} if record.rotation == "opq" else set())
        if set(tensors) != wanted:
            raise ArtifactError(f"{book_path}: holds tensors {sorted(tensors)}, expected "
                                f"{sorted(wanted)}; {hint}")
        codebook = tensors["centroids"].numpy()
        rotation = tensors["rotation"].numpy() if "rotation" in tensors else None
    width = record.m if record.codec == "pq" else record.dim
    if tuple(codes.shape) != (record.rows, width):
        raise ArtifactError(f"{path}: shape {list(codes.shape)}, the manifest records "
                            f"[{record.rows}, {width}]; {hint}")
    if record.rows != num_rows or record.dim != dim:
        raise ArtifactError(f"{path}: {record.rows} item vectors of dimension {record.dim}, "
                            f"the model has {num_rows} items and a query head of dimension "
                            f"{dim}; {hint}")
    if record.corpus_fingerprint != (manifest.get("corpus") or {}).get("fingerprint"):
        raise ArtifactError(f"{path}: made from another corpus than the model's; {hint}")
    try:
        vectors = CompactItemVectors(codes, codebook, rotation)
    except ConfigError as exc:
        raise ArtifactError(f"{path}: {exc}; {hint}") from exc
    if vectors.dim != record.dim:
        raise ArtifactError(f"{path}: codebook of dimension {vectors.dim}, the manifest "
                            f"records {record.dim}; {hint}")
    return vectors


def write_codes(path: Path, codes: Any) -> None:
    """Write row-indexable ``codes`` (a live update's stacked parts) to ``path`` in
    chunks."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=codes.dtype,
                                    shape=tuple(codes.shape))
    for a in range(0, len(codes), CHUNK_ROWS):
        out[a:a + CHUNK_ROWS] = codes[np.arange(a, min(a + CHUNK_ROWS, len(codes)))]
    out.flush()
    del out


def compress_item_vectors(model_dir: str | Path, config: CompactConfig | None, *,
                          corpus_path: str | Path | None = None, verify: bool = True,
                          show_progress: bool = False) -> CompactRecord | None:
    """Store compact item vectors in a generative model directory (``config``; ``None``:
    remove them, back to the corpus's embeddings) and make its hybrid search use them.

    The vectors of every row of the model's index are read: the training corpus's
    ``embeddings.npy`` (``corpus_path``, default the manifest's; its fingerprint checked),
    then the items added live. The directory is replaced atomically as a new update version
    (a retriever loaded before refuses to write a live update over it), under the live
    updates' writer lock. Returns the manifest's new record (None when removed).
    """
    from gcmr.artifacts import MANIFEST, atomic_dir, verify_checksums
    from gcmr.corpus import check_corpus_fingerprint
    from gcmr.model.io import (
        ITEM_CODEBOOK,
        ITEM_CODES,
        read_generative_manifest,
        write_model_manifest,
    )
    from gcmr.search.rerank import StackedRows, open_item_embeddings
    from gcmr.search.updates import (
        ADDITION_FILES,
        UPDATES,
        Additions,
        link_tree,
        update_lock,
        update_version,
    )

    model_dir = Path(model_dir)
    with update_lock(model_dir):
        manifest = read_generative_manifest(model_dir)
        if verify:
            verify_checksums(model_dir, manifest)
        if not (manifest.get("model_config") or {}).get("query_dim"):
            raise ConfigError(f"{model_dir}: the model has no query-vector head, so hybrid "
                              f"search scores no item vectors (train with --dense-weight > 0)")
        rerank = dict(manifest.get("rerank") or {})
        if rerank.get("item_vectors") == "captions":
            raise ConfigError(f"{model_dir}: hybrid search scores candidates by their caption "
                              f"vectors (rerank item_vectors = captions), not by item "
                              f"embeddings; there is nothing to compress")
        if rerank.get("item_vectors") == "blend":
            raise ConfigError(f"{model_dir}: hybrid search blends the item embeddings with "
                              f"the caption vectors (rerank item_vectors = blend); compact "
                              f"vectors replace the embeddings alone, which a blend does not "
                              f"support yet")
        record = None
        if config is not None:
            corpus = Path(corpus_path or manifest["corpus"]["path"])
            base = open_item_embeddings(corpus)
            check_corpus_fingerprint(corpus, manifest["corpus"].get("fingerprint"),
                                     artifact=model_dir)
            additions = Additions.open(model_dir, manifest)
            expected = int(manifest["index"]["num_items"]) - len(additions)
            if len(base) != expected:
                raise ArtifactError(f"{corpus / 'embeddings.npy'} has {len(base)} rows, the "
                                    f"model's index {expected}; is this the right corpus?")
            items = StackedRows([base, *additions.parts]) if len(additions) else base
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with atomic_dir(model_dir, overwrite=True) as tmp:
            link_tree(model_dir, tmp, skip={MANIFEST, ITEM_CODES, ITEM_CODEBOOK})
            if config is not None:
                record = write_compact(tmp, items, config,
                                       corpus_fingerprint=manifest["corpus"]["fingerprint"],
                                       show_progress=show_progress)
            out = json.loads(json.dumps(manifest))
            if record is not None:
                out[COMPACT_FIELD] = record.to_dict()
                rerank["item_vectors"] = "compact"
            else:
                out.pop(COMPACT_FIELD, None)
                rerank["item_vectors"] = "embeddings"
            out["rerank"] = rerank
            info = out.setdefault(UPDATES, {"version": 0, "log": []})
            info["version"] = update_version(manifest) + 1
            info.setdefault("log", []).append(
                {"version": info["version"], "op": "compress", "at": started,
                 "codec": record.codec if record else "none",
                 **({"m": record.m, "rotation": record.rotation,
                     "bytes_per_item": record.bytes_per_item} if record else {})})
            fields = {k: v for k, v in out.items()
                      if k not in ("format", "version", "library_versions", "sha256")}
            write_model_manifest(tmp, dense=False, extra_checksums=ADDITION_FILES, **fields)
        return record


__all__ = ["CODECS", "COMPACT_FIELD", "CompactConfig", "CompactItemVectors", "CompactRecord",
           "compress_item_vectors", "open_compact", "train_codebook", "write_compact"]
