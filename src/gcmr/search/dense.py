"""Dense retrieval: the dual-tower baseline and zero-shot search with precomputed query vectors.

A dense searcher scores query vectors against the corpus's item embeddings by cosine
similarity (inner product of L2-normalized vectors) through one of two backends:

- ``exact``: torch matmul + top-k over chunks of ``chunk_rows`` items with a running top-k
  merge, so memory stays bounded at any corpus size (10M items: one chunk at a time from the
  memory map). When the normalized float32 matrix fits under ``in_memory_mb`` it is kept in
  RAM once (what a user serving exact search would do); otherwise it is streamed.
- ``faiss:<factory>``: a faiss index from the factory string (``Flat``, ``HNSW32``,
  ``IVF1024,PQ64``...), see :mod:`gcmr.search.faiss_index`.

Queries are vectors in the item space: from a trained query tower
(:class:`DenseRetriever`, ``gcmr train-dense``) or precomputed by the corpus
(:class:`ZeroShotSearcher`; optional corpus file ``queries/<split>.npy``, [Q, D] float32 or
float16, row i = line i of ``queries/<split>.jsonl``, e.g. CLIP text embeddings of the queries).

Both offer the searcher interface of :func:`gcmr.search.load_searcher`:
``search(queries, k) -> (scores, item_ids)``, ``search_rows(texts, k, candidates=) ->
(scores float32 [Q, k], rows int64 [Q, k])`` (-inf / -1 padding), ``item_ids``,
``item_descriptions()``, ``corpus_path``, ``corpus_fingerprint``. Dense search has no beam: an
explicit ``beam`` is refused, ``None`` is the only value. ``candidates`` restricts the pool to
those corpus rows (a sub-index over them is built once and cached, as the generative
Retriever caches a sub-trie).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcmr.config import JsonConfig
from gcmr.errors import ArtifactError, ConfigError, CorpusError, GcmrError, snippet
from gcmr.model.io import FAISS_FILE
from gcmr.search.base import CorpusSearcher, check_search_args
from gcmr.search.faiss_index import (
    DEFAULT_CHUNK_ROWS,
    adapt_factory,
    build_faiss_index,
    faiss_search,
    index_nbytes,
    load_faiss_index,
    normalize_rows,
    normalized_chunk,
    save_faiss_index,
    set_search_params,
)
from gcmr.search.rerank import open_item_embeddings

# the score matrix of one (query batch x item chunk) step is kept under this many floats
_MAX_SCORE_ELEMS = 1 << 25


@dataclass
class DenseSearchConfig(JsonConfig):
    """How a dense searcher ranks items (saved in a dense model's manifest as its default)."""

    backend: str = "exact"  # exact | faiss:<index factory string>, e.g. faiss:HNSW32
    chunk_rows: int = DEFAULT_CHUNK_ROWS  # items per chunk (exact search, faiss adds)
    in_memory_mb: int = 4096  # exact: keep the normalized matrix in RAM when it fits (0 = stream)
    ef_search: int = 64  # faiss HNSW efSearch
    nprobe: int = 16  # faiss IVF nprobe
    train_size: int = 100_000  # faiss IVF/PQ training sample (seeded)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backend != "exact" and not (self.backend.startswith("faiss:")
                                            and len(self.backend) > len("faiss:")):
            raise ConfigError(f"dense backend must be 'exact' or 'faiss:<factory string>' "
                              f"(e.g. faiss:Flat, faiss:HNSW32, faiss:IVF1024,PQ64), got "
                              f"{self.backend!r}")
        for name in ("chunk_rows", "ef_search", "nprobe", "train_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"dense option {name} must be >= 1, got {getattr(self, name)}")
        if self.in_memory_mb < 0:
            raise ConfigError(f"dense option in_memory_mb must be >= 0, got {self.in_memory_mb}")

    @property
    def factory(self) -> str | None:
        return self.backend[len("faiss:"):] if self.backend.startswith("faiss:") else None


# ----------------------------------------------------------------------------- exact search


def _pad(scores: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    q = scores.shape[0]
    s_out = np.full((q, k), -np.inf, dtype=np.float32)
    r_out = np.full((q, k), -1, dtype=np.int64)
    width = min(k, scores.shape[1])
    s_out[:, :width] = scores[:, :width].numpy()
    r_out[:, :width] = rows[:, :width].numpy()
    return s_out, r_out


def _merge_topk(best_s: torch.Tensor | None, best_r: torch.Tensor | None, s: torch.Tensor,
                r: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    if best_s is None:
        return s, r
    s = torch.cat([best_s, s], dim=1)
    r = torch.cat([best_r, r], dim=1)
    keep = min(k, s.shape[1])
    top, pos = s.topk(keep, dim=1)
    return top, r.gather(1, pos)


def _chunked_topk(queries: np.ndarray, chunks: Any, n: int, k: int,
                  step_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-``k`` of ``queries`` over ``n`` items served by ``chunks(start, stop)`` (a
    normalized float32 [stop - start, D] block): the score matrix of one (query batch x
    chunk) step stays under ``_MAX_SCORE_ELEMS`` floats, merged into a running top-k."""
    if k < 1:
        raise GcmrError(f"k must be >= 1, got {k}")
    q = torch.from_numpy(normalize_rows(queries))
    step = max(1, min(step_rows, _MAX_SCORE_ELEMS // max(1, q.shape[0])))
    best_s = best_r = None
    for start in range(0, n, step):
        x = chunks(start, min(n, start + step))
        s, pos = (q @ x.T).topk(min(k, x.shape[0]), dim=1)
        best_s, best_r = _merge_topk(best_s, best_r, s, pos + start, k)
    if best_s is None:
        return _pad(torch.zeros(len(q), 0), torch.zeros(len(q), 0, dtype=torch.int64), k)
    return _pad(best_s, best_r, k)


def exact_search(queries: np.ndarray, items: Any, k: int, *,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-``k`` of ``queries`` [Q, D] over ``items`` [N, D] (memmap or array of
    any float dtype, normalized chunk by chunk): ``(scores float32 [Q, k], rows int64 [Q, k])``.

    Memory: one chunk of ``chunk_rows`` float32 items plus a [Q, chunk] score matrix (the chunk
    shrinks for large query batches) plus the running [Q, k] top-k.
    """
    return _chunked_topk(queries, lambda a, b: torch.from_numpy(normalized_chunk(items, a, b)),
                         len(items), k, chunk_rows)


class ExactBackend:
    """Exact cosine search over ``items`` (optionally a subset ``rows`` of them)."""

    def __init__(self, items: Any, config: DenseSearchConfig, *,
                 rows: np.ndarray | None = None) -> None:
        t0 = time.perf_counter()
        self.config = config
        self.rows = rows
        n = len(items) if rows is None else len(rows)
        self.num_items = n
        self.dim = int(items.shape[1])
        fits = n * self.dim * 4 <= config.in_memory_mb * (1 << 20)
        self._matrix: torch.Tensor | None = None
        self._items = items
        if rows is not None or fits:
            # normalized float32 matrix in RAM, filled chunk by chunk
            matrix = np.empty((n, self.dim), dtype=np.float32)
            for start in range(0, n, config.chunk_rows):
                stop = min(n, start + config.chunk_rows)
                if rows is None:
                    matrix[start:stop] = normalized_chunk(items, start, stop)
                else:
                    matrix[start:stop] = normalize_rows(np.asarray(items[rows[start:stop]]))
            self._matrix = torch.from_numpy(matrix)
        self.build_seconds = time.perf_counter() - t0

    @property
    def in_memory(self) -> bool:
        return self._matrix is not None

    @property
    def nbytes(self) -> int:
        """Bytes the backend holds beyond the corpus's own embedding file (0 when streaming)."""
        return int(self._matrix.numel() * 4) if self._matrix is not None else 0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._matrix is None:
            return exact_search(queries, self._items, k, chunk_rows=self.config.chunk_rows)
        matrix = self._matrix
        return _chunked_topk(queries, lambda a, b: matrix[a:b], matrix.shape[0], k,
                             self.config.chunk_rows)


class FaissBackend:
    """A faiss index over normalized ``items`` (optionally a subset ``rows``)."""

    def __init__(self, items: Any, config: DenseSearchConfig, *, rows: np.ndarray | None = None,
                 index: Any = None) -> None:
        self.config = config
        self.rows = rows
        n = len(items) if rows is None else len(rows)
        self.factory = adapt_factory(config.factory or "Flat", min(n, config.train_size))
        if index is None:
            index, info = build_faiss_index(items, self.factory, chunk_rows=config.chunk_rows,
                                            train_size=config.train_size, seed=config.seed,
                                            ef_search=config.ef_search, nprobe=config.nprobe,
                                            rows=rows)
            self.build_seconds = info.seconds
        else:
            if int(index.ntotal) != n or int(index.d) != int(items.shape[1]):
                raise ArtifactError(f"saved faiss index holds {index.ntotal} x {index.d} vectors, "
                                    f"the corpus has {n} x {items.shape[1]}; rebuild it")
            set_search_params(index, ef_search=config.ef_search, nprobe=config.nprobe)
            self.build_seconds = 0.0
        self.index = index
        self.num_items = n

    @property
    def nbytes(self) -> int:
        return index_nbytes(self.index)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k < 1:
            raise GcmrError(f"k must be >= 1, got {k}")
        return faiss_search(self.index, queries, k)


def make_backend(items: Any, config: DenseSearchConfig, *, rows: np.ndarray | None = None,
                 index: Any = None) -> ExactBackend | FaissBackend:
    """The backend ``config.backend`` over ``items`` (or the subset ``rows``)."""
    if config.backend == "exact":
        return ExactBackend(items, config, rows=rows)
    return FaissBackend(items, config, rows=rows, index=index)


# ----------------------------------------------------------------------------- searchers


class DenseSearcher(CorpusSearcher):
    """Vectors in, ranked corpus rows out; the common part of the dense searchers."""

    def __init__(self, items: Any, config: DenseSearchConfig, *, corpus_path: Path,
                 corpus_fingerprint: str, index: Any = None,
                 backend: ExactBackend | FaissBackend | None = None,
                 item_ids: list[str] | None = None) -> None:
        """``index`` is a prebuilt faiss index for ``config``'s backend; ``backend`` a ready
        backend over ``items`` (reused, e.g. by validation across epochs); ``item_ids`` the
        ids in row order when the caller has them (else read from the corpus on first use)."""
        super().__init__(corpus_path=corpus_path, corpus_fingerprint=corpus_fingerprint,
                         item_ids=item_ids, num_items=len(items))
        self.items = items
        self.config = config
        self._preloaded_index = index
        self._backend = backend
        self._sub: tuple[bytes, ExactBackend | FaissBackend] | None = None

    @property
    def backend(self) -> ExactBackend | FaissBackend:
        """The full-corpus backend, built on first use."""
        if self._backend is None:
            self._backend = make_backend(self.items, self.config, index=self._preloaded_index)
            self._preloaded_index = None
        return self._backend

    @property
    def num_items(self) -> int:
        return len(self.items)

    def search_vectors(self, vectors: np.ndarray, *, k: int = 10,
                       candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` corpus rows for query vectors [Q, D] in the item space."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.items.shape[1]:
            raise GcmrError(f"query vectors must be [Q, {self.items.shape[1]}], got "
                            f"{list(vectors.shape)}")
        if candidates is None:
            return self.backend.search(vectors, k)
        backend = self._subset(np.asarray(candidates, dtype=np.int64))
        scores, pos = backend.search(vectors, k)
        rows = np.where(pos >= 0, backend.rows[np.maximum(pos, 0)], -1)
        return scores, rows

    def _subset(self, rows: np.ndarray) -> ExactBackend | FaissBackend:
        rows = np.unique(rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self.items)):
            raise GcmrError("candidate rows fall outside the corpus")
        key = rows.tobytes()
        if self._sub is None or self._sub[0] != key:
            self._sub = (key, make_backend(self.items, self.config, rows=rows))
        return self._sub[1]

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def search_rows(self, queries: Sequence[str], *, k: int = 10, beam: int | None = None,
                    candidates: np.ndarray | None = None, batch_size: int = 256
                    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float32 [Q, k], rows int64 [Q, k])`` for text queries (cosine scores).
        Dense search scores every item and has no beam: ``beam`` must be ``None``."""
        queries = check_search_args(queries, k=k, beam=beam, candidates=candidates,
                                    num_items=self.num_items, batch_size=batch_size)
        if beam is not None:
            raise ConfigError(f"beam={beam}: a dense model ranks every item exactly and has no "
                              f"beam (the beam applies to generative models)")
        texts = list(queries)
        scores = np.full((len(texts), k), -np.inf, dtype=np.float32)
        rows = np.full((len(texts), k), -1, dtype=np.int64)
        for start in range(0, len(texts), batch_size):
            vectors = self.encode_queries(texts[start:start + batch_size])
            s, r = self.search_vectors(vectors, k=k, candidates=candidates)
            scores[start:start + len(vectors)] = s
            rows[start:start + len(vectors)] = r
        return scores, rows

    def save_index(self, path: str | Path) -> None:
        """Write the full-corpus faiss index (``faiss`` backends only)."""
        backend = self.backend
        if not isinstance(backend, FaissBackend):
            raise ConfigError("only faiss backends have an index to save (backend is exact)")
        save_faiss_index(backend.index, path)


# ----------------------------------------------------------------------------- zero-shot


def query_embeddings_path(corpus_path: str | Path, split: str) -> Path:
    return Path(corpus_path) / "queries" / f"{split}.npy"


def load_query_embeddings(corpus: Any, split: str) -> np.ndarray:
    """The optional corpus file ``queries/<split>.npy``: [Q, D] query vectors in the item
    space, row i = line i of ``queries/<split>.jsonl``. Checked for shape and finiteness."""
    path = query_embeddings_path(corpus.path, split)
    queries = corpus.split(split)
    if not path.is_file():
        raise CorpusError(f"{path}: missing; zero-shot dense search needs the query embeddings "
                          f"of split {split!r} ([{len(queries)}, {corpus.dim}] float32, row i = "
                          f"line i of queries/{split}.jsonl)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CorpusError(f"{path}: cannot read ({exc})") from exc
    if arr.ndim != 2 or arr.shape != (len(queries), corpus.dim):
        raise CorpusError(f"{path}: expected shape [{len(queries)}, {corpus.dim}] (queries of "
                          f"the split x embedding dim), got {list(arr.shape)}")
    if arr.dtype not in (np.float32, np.float16):
        raise CorpusError(f"{path}: expected float32 or float16, got {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if len(bad):
        raise CorpusError(f"{path}: row {int(bad[0])} (line {int(bad[0]) + 1} of "
                          f"queries/{split}.jsonl) has NaN or Inf values")
    return arr


class ZeroShotSearcher(DenseSearcher):
    """Dense search with the corpus's precomputed query embeddings (no trained tower): what a
    CLIP/ImageBind user has. Knows only the query texts of the splits it was given."""

    def __init__(self, corpus: Any, splits: Sequence[str], config: DenseSearchConfig) -> None:
        super().__init__(corpus.embeddings, config, corpus_path=corpus.path,
                         corpus_fingerprint=corpus.fingerprint)
        self._item_ids = list(corpus.ids)
        self._vectors: dict[str, np.ndarray] = {}
        for split in splits:
            vectors = load_query_embeddings(corpus, split)
            for query, vector in zip(corpus.split(split), vectors):
                self._vectors.setdefault(query.text, vector)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self._vectors]
        if missing:
            raise GcmrError(f"zero-shot dense search has no precomputed embedding for query "
                            f"{snippet(missing[0])} (only the queries of the loaded splits are "
                            f"known)")
        return np.stack([self._vectors[t] for t in texts]) if texts else \
            np.zeros((0, self.items.shape[1]), dtype=np.float32)


# ----------------------------------------------------------------------------- trained tower


class DenseRetriever(DenseSearcher):
    """A trained dual-tower model (``gcmr train-dense``): query tower + tokenizer + the
    corpus's frozen item embeddings, searched through a dense backend."""

    def __init__(self, tower, tokenizer, items: Any, config: DenseSearchConfig,
                 manifest: dict[str, Any], *, path: Path, corpus_path: Path,
                 device: torch.device, **searcher_options: Any) -> None:
        super().__init__(items, config, corpus_path=corpus_path,
                         corpus_fingerprint=manifest["corpus"]["fingerprint"],
                         **searcher_options)
        self.tower = tower.eval()
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.path = path
        self.device = device

    @classmethod
    def load(cls, model_dir: str | Path, *, device: str = "auto", backend: str | None = None,
             corpus_path: str | Path | None = None, verify: bool = True,
             **search_options: Any) -> DenseRetriever:
        """Load a ``gcmr-dense`` model directory and memory-map its corpus's embeddings
        (``verify``: check the recorded sha256 of the model's files).

        ``backend`` / ``search_options`` override the search settings saved at training time
        (``DenseSearchConfig`` fields). A saved faiss index (``--save-index``) is used when it
        was built with the same backend.
        """
        from gcmr.model.io import load_dense_tower, read_dense_manifest
        from gcmr.runtime import resolve_device

        model_dir = Path(model_dir)
        manifest = read_dense_manifest(model_dir)
        tower, tokenizer, manifest = load_dense_tower(model_dir, manifest, verify=verify)
        tower_config = tower.config
        search = dict(manifest.get("search", {}))
        if backend is not None:
            search["backend"] = backend
        search.update(search_options)
        config = DenseSearchConfig.from_dict(search, where="dense search options")
        corpus = Path(corpus_path or manifest["corpus"]["path"])
        items = open_item_embeddings(corpus)
        expected = (manifest["corpus"]["num_items"], tower_config.item_dim)
        if tuple(items.shape) != tuple(expected):
            raise ArtifactError(f"{corpus / 'embeddings.npy'} is {list(items.shape)}, the model "
                                f"was trained on [{expected[0]}, {expected[1]}]; is this the "
                                f"right corpus?")
        index = None
        saved = manifest.get("saved_index")
        if saved and saved.get("backend") == config.backend and (model_dir / FAISS_FILE).is_file():
            index = load_faiss_index(model_dir / FAISS_FILE)
        dev = resolve_device(device)
        return cls(tower.to(dev), tokenizer, items, config, manifest, path=model_dir,
                   corpus_path=corpus, device=dev, index=index)

    @torch.no_grad()
    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors [Q, D] (L2-normalized) from the tower."""
        if not texts:
            return np.zeros((0, self.items.shape[1]), dtype=np.float32)
        ids, mask = self.tokenizer.encode_batch(list(texts))
        out = self.tower(ids.to(self.device), mask.to(self.device))
        return out.float().cpu().numpy()
