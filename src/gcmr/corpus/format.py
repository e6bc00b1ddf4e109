"""Corpus format v1: read, validate and write (see GUIDE.md section 3).

```
<corpus>/
  corpus.json            {"format": "gcmr-corpus", "version": 1, "name", "modality",
                          "embedding_dim", "num_items", "embedding_model"}
  items.jsonl            {"id", "captions": [...], "source"?} one per line, in embedding row order
  embeddings.npy         float32 | float16 [N, D]
  queries/<split>.jsonl  {"text", "relevant": [item ids]}
  oracle.json            optional {"<split>": {"R@1": f, ...}}
  caption_embeddings.npy optional [N, D_text]
```

Reading validates everything and reports every problem with its file, line and field.
Embeddings are memory-mapped, and scanned for NaN/Inf in bounded chunks, so a corpus much
larger than RAM can be validated and indexed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.artifacts import atomic_dir, recover, write_json
from gcmr.errors import ArtifactError, CorpusError

FORMAT = "gcmr-corpus"
VERSION = 1
MODALITIES = ("image", "audio", "video", "other")
EMBEDDING_DTYPES = (np.dtype("float32"), np.dtype("float16"))
METRIC_NAMES = ("R@1", "R@5", "R@10", "MRR@10")
SCAN_ROWS = 1 << 16  # rows per chunk when scanning embeddings for NaN/Inf
MAX_PROBLEMS = 200  # stop collecting after this many problems (the count is still reported)
FULL_HASH_BYTES = 1 << 28  # embeddings smaller than this are hashed whole for the fingerprint


@dataclass(frozen=True)
class Query:
    """A human query and the ids of the items relevant to it."""

    text: str
    relevant: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "relevant": list(self.relevant)}


@dataclass
class CorpusMeta:
    """The fields of ``corpus.json``; unknown extra fields are kept in ``extra``."""

    name: str
    modality: str
    embedding_dim: int
    num_items: int
    embedding_model: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "modality": self.modality,
            "embedding_dim": self.embedding_dim,
            "num_items": self.num_items,
            "embedding_model": self.embedding_model,
        }
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out


class _Problems:
    """Collects problems up to a limit, counting the rest."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.dropped = 0

    def add(self, message: str) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(message)
        else:
            self.dropped += 1

    def raise_if_any(self) -> None:
        if self.items:
            extra = [f"... and {self.dropped} more problems"] if self.dropped else []
            raise CorpusError(self.items + extra)


class Corpus:
    """A validated corpus. ``embeddings`` is a read-only memory map [N, D].

    Build one with :func:`load_corpus`.
    """

    def __init__(
        self,
        path: Path,
        meta: CorpusMeta,
        ids: list[str],
        captions: list[list[str]] | None,
        sources: list[str | None] | None,
        embeddings: np.ndarray,
        queries: dict[str, list[Query]],
        oracle: dict[str, dict[str, float]] | None,
        fingerprint: str,
    ) -> None:
        self.path = path
        self.meta = meta
        self.ids = ids
        self._captions = captions
        self.sources = sources
        self.embeddings = embeddings
        self.queries = queries
        self.oracle = oracle
        self.fingerprint = fingerprint
        self._row_of: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"Corpus({str(self.path)!r}, items={len(self)}, dim={self.dim}, "
                f"splits={sorted(self.queries)})")

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def captions(self) -> list[list[str]]:
        if self._captions is None:
            raise CorpusError(f"{self.path}: corpus was loaded with load_captions=False")
        return self._captions

    @property
    def splits(self) -> list[str]:
        return sorted(self.queries)

    @property
    def row_of(self) -> dict[str, int]:
        """Item id -> embedding row."""
        if self._row_of is None:
            self._row_of = {item_id: row for row, item_id in enumerate(self.ids)}
        return self._row_of

    def split(self, name: str) -> list[Query]:
        """The queries of a split; a missing split names the ones that exist."""
        if name not in self.queries:
            raise CorpusError(
                f"{self.path / 'queries' / (name + '.jsonl')}: no query split {name!r} "
                f"(available: {self.splits or 'none'})"
            )
        return self.queries[name]

    def relevant_rows(self, name: str) -> list[np.ndarray]:
        """For each query of a split, the embedding rows of its relevant items."""
        row_of = self.row_of
        return [np.array([row_of[r] for r in q.relevant], dtype=np.int64) for q in self.split(name)]

    def caption_embeddings(self) -> np.ndarray | None:
        """The optional ``caption_embeddings.npy`` [N, D_text] (memory-mapped), or None."""
        path = self.path / "caption_embeddings.npy"
        if not path.exists():
            return None
        problems = _Problems()
        arr = _open_matrix(path, problems, rows=len(self), dim=None)
        problems.raise_if_any()
        return arr


# ----------------------------------------------------------------------------- reading


def load_corpus(
    path: str | Path,
    *,
    load_captions: bool = True,
    check_finite: bool = True,
) -> Corpus:
    """Read and validate a corpus directory.

    Raises :class:`CorpusError` listing every problem (file, line, field). ``check_finite``
    scans the embeddings for NaN/Inf in chunks of ``SCAN_ROWS`` rows (memory stays bounded).
    """
    root = Path(path)
    recover(root)  # an interrupted overwrite of this corpus: put the complete one back
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory (expected a corpus directory with corpus.json)")
    problems = _Problems()
    meta = _read_meta(root / "corpus.json", problems)
    hasher = hashlib.sha256()
    ids, captions, sources = _read_items(root / "items.jsonl", problems, hasher, load_captions)
    emb_path = root / "embeddings.npy"
    embeddings = _open_matrix(emb_path, problems, rows=len(ids),
                              dim=meta.embedding_dim if meta else None, dtypes=EMBEDDING_DTYPES,
                              rows_name="items in items.jsonl")
    if meta is not None and meta.num_items != len(ids):
        problems.add(f"{root / 'corpus.json'}: field 'num_items' is {meta.num_items} but "
                     f"items.jsonl has {len(ids)} items")
    if embeddings is not None and check_finite:
        _check_finite(emb_path, embeddings, problems, ids)
    row_of = {item_id: row for row, item_id in enumerate(ids)}
    queries = _read_query_splits(root / "queries", problems, row_of)
    oracle = _read_oracle(root / "oracle.json", problems)
    cap_path = root / "caption_embeddings.npy"
    if cap_path.exists():
        _open_matrix(cap_path, problems, rows=len(ids), dim=None, rows_name="items")
    problems.raise_if_any()
    assert meta is not None and embeddings is not None
    _hash_embeddings(hasher, emb_path, embeddings)
    corpus = Corpus(root, meta, ids, captions, sources, embeddings, queries, oracle,
                    hasher.hexdigest()[:32])
    corpus._row_of = row_of
    return corpus


def corpus_fingerprint(path: str | Path) -> str:
    """The fingerprint :func:`load_corpus` gives the corpus at ``path`` (sha256 of
    ``items.jsonl``, the embeddings' dtype and shape, and the embeddings: whole when small,
    else evenly spaced rows), computed without validating the corpus. Raises
    :class:`CorpusError` naming a file that is missing or unreadable."""
    root = Path(path)
    items, emb_path = root / "items.jsonl", root / "embeddings.npy"
    hasher = hashlib.sha256()
    try:
        with items.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                hasher.update(block)
    except OSError as exc:
        raise CorpusError(f"{items}: cannot read ({exc})") from exc
    try:
        embeddings = np.load(emb_path, mmap_mode="r", allow_pickle=False)
        _hash_embeddings(hasher, emb_path, embeddings)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for bad files
        raise CorpusError(f"{emb_path}: not a readable .npy array ({exc})") from exc
    return hasher.hexdigest()[:32]


def check_corpus_fingerprint(path: str | Path, expected: str | None, *,
                             artifact: str | Path | None = None) -> None:
    """Refuse a corpus that changed since ``artifact`` (a model or index directory) recorded
    its fingerprint ``expected``: its rows would no longer be the artifact's rows, so the
    captions and ids shown for a result would belong to other items.

    Called where a searcher reads captions or ids from its corpus by row. Nothing to check
    when ``expected`` is empty or the corpus has no ``items.jsonl`` (nothing is read from
    it). Costs one read of ``items.jsonl`` and of the embeddings up to ``FULL_HASH_BYTES``.
    """
    root = Path(path)
    if not expected or not (root / "items.jsonl").is_file():
        return
    actual = corpus_fingerprint(root)
    if actual != expected:
        owner = f"{artifact}" if artifact is not None else "the model"
        raise ArtifactError(
            f"{root} has changed since {owner} was built from it (corpus fingerprint {actual}, "
            f"recorded {expected}): items were edited or reordered, so results would show "
            f"other items' captions and ids. Retrain on the edited corpus (gcmr index, then "
            f"gcmr train), or point to the original corpus with --corpus")


def read_items(path: str | Path, *, load_captions: bool = True
               ) -> tuple[list[str], list[list[str]] | None, list[str | None] | None]:
    """Read and validate one ``items.jsonl`` (ids, captions, sources in row order) without the
    rest of the corpus; raises :class:`CorpusError` naming every bad line and field."""
    problems = _Problems()
    out = _read_items(Path(path), problems, None, load_captions)
    problems.raise_if_any()
    return out


def _read_json_file(path: Path, problems: _Problems) -> Any:
    if not path.is_file():
        problems.add(f"{path}: missing file")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.add(f"{path}: malformed JSON ({exc})")
        return None


def _read_meta(path: Path, problems: _Problems) -> CorpusMeta | None:
    data = _read_json_file(path, problems)
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.add(f"{path}: expected a JSON object")
        return None
    before = len(problems.items)
    if data.get("format") != FORMAT:
        problems.add(f"{path}: field 'format' must be {FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != VERSION:
        problems.add(f"{path}: field 'version' must be {VERSION}, got {data.get('version')!r} "
                     f"(this gcmr reads corpus format v{VERSION})")
    for key, kind in (("name", str), ("modality", str), ("embedding_dim", int),
                      ("num_items", int), ("embedding_model", str)):
        value = data.get(key)
        if key not in data:
            problems.add(f"{path}: missing field {key!r}")
        elif not isinstance(value, kind) or isinstance(value, bool):
            problems.add(f"{path}: field {key!r} must be {kind.__name__}, got {value!r}")
        elif kind is int and value < 0:
            problems.add(f"{path}: field {key!r} must be >= 0, got {value}")
    if isinstance(data.get("modality"), str) and data["modality"] not in MODALITIES:
        problems.add(f"{path}: field 'modality' must be one of {list(MODALITIES)}, "
                     f"got {data['modality']!r}")
    if len(problems.items) > before:
        return None
    known = {"format", "version", "name", "modality", "embedding_dim", "num_items", "embedding_model"}
    return CorpusMeta(
        name=data["name"], modality=data["modality"], embedding_dim=data["embedding_dim"],
        num_items=data["num_items"], embedding_model=data["embedding_model"],
        extra={k: v for k, v in data.items() if k not in known},
    )


def _iter_jsonl(path: Path, problems: _Problems, hasher: Any = None) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each line; record malformed lines as problems."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if hasher is not None:
                hasher.update(raw)
            text = raw.strip()
            if not text:
                problems.add(f"{path} line {lineno}: blank line (every line must hold one object)")
                continue
            try:
                obj = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                problems.add(f"{path} line {lineno}: malformed JSON ({exc})")
                continue
            if not isinstance(obj, dict):
                problems.add(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
                continue
            yield lineno, obj


def _read_items(
    path: Path, problems: _Problems, hasher: Any, load_captions: bool
) -> tuple[list[str], list[list[str]] | None, list[str | None] | None]:
    ids: list[str] = []
    captions: list[list[str]] | None = [] if load_captions else None
    sources: list[str | None] | None = [] if load_captions else None
    if not path.is_file():
        problems.add(f"{path}: missing file")
        return ids, captions, sources
    first_line: dict[str, int] = {}
    for lineno, obj in _iter_jsonl(path, problems, hasher):
        item_id = obj.get("id")
        if "id" not in obj:
            problems.add(f"{path} line {lineno}: missing field 'id'")
            item_id = f"<missing id, line {lineno}>"
        elif not isinstance(item_id, str) or not item_id:
            problems.add(f"{path} line {lineno}: field 'id' must be a non-empty string, got {item_id!r}")
            item_id = f"<bad id, line {lineno}>"
        elif item_id in first_line:
            problems.add(f"{path} line {lineno}: field 'id': duplicate id {item_id!r} "
                         f"(first on line {first_line[item_id]})")
        else:
            first_line[item_id] = lineno
        caps = obj.get("captions", [])
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            problems.add(f"{path} line {lineno}: field 'captions' must be a list of strings")
            caps = []
        else:
            for j, cap in enumerate(caps):
                if not cap.strip():
                    problems.add(f"{path} line {lineno}: field 'captions[{j}]' is empty")
        source = obj.get("source")
        if source is not None and not isinstance(source, str):
            problems.add(f"{path} line {lineno}: field 'source' must be a string")
            source = None
        ids.append(item_id)
        if captions is not None and sources is not None:
            captions.append(caps)
            sources.append(source)
    return ids, captions, sources


def _open_matrix(
    path: Path,
    problems: _Problems,
    *,
    rows: int,
    dim: int | None,
    dtypes: Sequence[np.dtype] | None = None,
    rows_name: str = "items",
) -> np.ndarray | None:
    if not path.is_file():
        problems.add(f"{path}: missing file")
        return None
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for bad files
        problems.add(f"{path}: not a readable .npy array ({exc})")
        return None
    ok = True
    if arr.ndim != 2:
        problems.add(f"{path}: expected a rank-2 array [N, D], got shape {tuple(arr.shape)}")
        return None
    allowed = dtypes or (np.dtype("float32"), np.dtype("float16"), np.dtype("float64"))
    if arr.dtype not in allowed:
        problems.add(f"{path}: dtype {arr.dtype} is not supported "
                     f"(use {' or '.join(str(d) for d in allowed)})")
        ok = False
    if arr.shape[0] != rows:
        problems.add(f"{path}: has {arr.shape[0]} rows but there are {rows} {rows_name}")
        ok = False
    if dim is not None and arr.shape[1] != dim:
        problems.add(f"{path}: has dimension {arr.shape[1]} but corpus.json says "
                     f"embedding_dim = {dim}")
        ok = False
    return arr if ok else None


def _check_finite(path: Path, arr: np.ndarray, problems: _Problems, ids: list[str]) -> None:
    bad_total = 0
    for start in range(0, arr.shape[0], SCAN_ROWS):
        chunk = np.asarray(arr[start:start + SCAN_ROWS], dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
        for b in bad[: max(0, 10 - bad_total)]:
            row = start + int(b)
            problems.add(f"{path} row {row} (items.jsonl line {row + 1}, id {ids[row]!r}): "
                         f"contains NaN or Inf")
        bad_total += len(bad)
    if bad_total > 10:
        problems.add(f"{path}: {bad_total} rows contain NaN or Inf in all")


def _hash_embeddings(hasher: Any, path: Path, arr: np.ndarray) -> None:
    """Fingerprint the embeddings: whole file when small, else shape + evenly spaced rows."""
    hasher.update(f"{arr.dtype}:{arr.shape}".encode())
    if path.stat().st_size <= FULL_HASH_BYTES:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                hasher.update(block)
        return
    sample = np.unique(np.linspace(0, arr.shape[0] - 1, 4096).astype(np.int64))
    hasher.update(np.ascontiguousarray(arr[sample]).tobytes())


def _read_query_splits(qdir: Path, problems: _Problems, row_of: dict[str, int]) -> dict[str, list[Query]]:
    splits: dict[str, list[Query]] = {}
    if not qdir.is_dir():
        return splits
    for path in sorted(qdir.glob("*.jsonl")):
        splits[path.stem] = read_queries(path, problems=problems, row_of=row_of)
    return splits


def read_queries(
    path: str | Path,
    *,
    problems: _Problems | None = None,
    row_of: dict[str, int] | None = None,
) -> list[Query]:
    """Read a queries JSONL file. With ``row_of``, relevant ids must be corpus items."""
    path = Path(path)
    own = problems is None
    problems = problems or _Problems()
    out: list[Query] = []
    if not path.is_file():
        problems.add(f"{path}: missing file")
    else:
        for lineno, obj in _iter_jsonl(path, problems):
            text = obj.get("text")
            if "text" not in obj:
                problems.add(f"{path} line {lineno}: missing field 'text'")
                continue
            if not isinstance(text, str) or not text.strip():
                problems.add(f"{path} line {lineno}: field 'text' is empty")
                continue
            relevant = obj.get("relevant")
            if not isinstance(relevant, list) or not relevant or \
                    not all(isinstance(r, str) for r in relevant):
                problems.add(f"{path} line {lineno}: field 'relevant' must be a non-empty list "
                             f"of item ids")
                continue
            if row_of is not None:
                unknown = [r for r in relevant if r not in row_of]
                if unknown:
                    problems.add(f"{path} line {lineno}: field 'relevant' names item ids not in "
                                 f"the corpus: {unknown[:5]}")
                    continue
            out.append(Query(text=text, relevant=tuple(relevant)))
    if own:
        problems.raise_if_any()
    return out


def _read_oracle(path: Path, problems: _Problems) -> dict[str, dict[str, float]] | None:
    if not path.exists():
        return None
    data = _read_json_file(path, problems)
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.add(f"{path}: expected an object mapping split -> metrics")
        return None
    for split, metrics in data.items():
        if not isinstance(metrics, dict):
            problems.add(f"{path}: field {split!r} must be an object of metrics")
            continue
        for name, value in metrics.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                    not math.isfinite(value) or not 0.0 <= value <= 1.0:
                problems.add(f"{path}: field '{split}.{name}' must be a fraction in [0, 1], "
                             f"got {value!r}")
    return data


# ----------------------------------------------------------------------------- writing


class CorpusWriter:
    """Write a corpus atomically, streaming items and embeddings in chunks.

    ```
    with CorpusWriter(out, name="x", modality="image", embedding_dim=D, num_items=N) as w:
        w.add_items(ids, captions, embeddings_chunk)
        w.write_queries("test", queries)
    ```
    The directory appears at ``out`` only when the block exits without error.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        name: str,
        modality: str,
        embedding_dim: int,
        num_items: int,
        embedding_model: str,
        dtype: str = "float32",
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if modality not in MODALITIES:
            raise CorpusError(f"modality must be one of {list(MODALITIES)}, got {modality!r}")
        if np.dtype(dtype) not in EMBEDDING_DTYPES:
            raise CorpusError(f"embedding dtype must be float32 or float16, got {dtype!r}")
        self.out = Path(out)
        self.meta = CorpusMeta(name, modality, int(embedding_dim), int(num_items),
                               embedding_model, dict(extra or {}))
        self.dtype = np.dtype(dtype)
        self.overwrite = overwrite
        self.count = 0
        self._seen: set[str] = set()
        self._ctx: Any = None

    def __enter__(self) -> CorpusWriter:
        self._ctx = atomic_dir(self.out, overwrite=self.overwrite)
        self.dir = self._ctx.__enter__()
        (self.dir / "queries").mkdir()
        self._items = (self.dir / "items.jsonl").open("w", encoding="utf-8")
        self._emb = np.lib.format.open_memmap(
            self.dir / "embeddings.npy", mode="w+", dtype=self.dtype,
            shape=(self.meta.num_items, self.meta.embedding_dim),
        )
        return self

    def add_items(
        self,
        ids: Sequence[str],
        captions: Sequence[Sequence[str]],
        embeddings: np.ndarray,
        sources: Sequence[str | None] | None = None,
    ) -> None:
        """Append a chunk of items with their embedding rows."""
        n = len(ids)
        embeddings = np.asarray(embeddings)
        if len(captions) != n or embeddings.shape != (n, self.meta.embedding_dim) or \
                (sources is not None and len(sources) != n):
            raise CorpusError(
                f"add_items: {n} ids, {len(captions)} captions, embeddings {embeddings.shape} "
                f"(expected [{n}, {self.meta.embedding_dim}])"
            )
        if self.count + n > self.meta.num_items:
            raise CorpusError(f"add_items: more than num_items = {self.meta.num_items} items")
        if not np.isfinite(embeddings).all():
            raise CorpusError("add_items: embeddings contain NaN or Inf")
        lines = []
        for i, item_id in enumerate(ids):
            if item_id in self._seen:
                raise CorpusError(f"add_items: duplicate id {item_id!r}")
            self._seen.add(item_id)
            obj: dict[str, Any] = {"id": item_id, "captions": list(captions[i])}
            if sources is not None and sources[i] is not None:
                obj["source"] = sources[i]
            lines.append(json.dumps(obj, ensure_ascii=False))
        self._items.write("\n".join(lines) + "\n" if lines else "")
        self._emb[self.count:self.count + n] = embeddings.astype(self.dtype, copy=False)
        self.count += n

    def write_queries(self, split: str, queries: Iterable[Query | dict[str, Any]]) -> int:
        """Write ``queries/<split>.jsonl``; returns the number written."""
        if not split or "/" in split or split.startswith("."):
            raise CorpusError(f"invalid split name {split!r}")
        n = 0
        with (self.dir / "queries" / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for q in queries:
                obj = q.to_dict() if isinstance(q, Query) else {"text": q["text"],
                                                                "relevant": list(q["relevant"])}
                fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
                n += 1
        return n

    def write_oracle(self, oracle: dict[str, dict[str, float]]) -> None:
        write_json(self.dir / "oracle.json", oracle)

    def write_caption_embeddings(self, arr: np.ndarray) -> None:
        np.save(self.dir / "caption_embeddings.npy", np.asarray(arr, dtype=np.float32))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._items.close()
        own_error = None
        if exc_type is None and self.count != self.meta.num_items:
            own_error = CorpusError(f"corpus writer: wrote {self.count} items, expected "
                                    f"num_items = {self.meta.num_items}")
        if exc_type is None and own_error is None:
            self._emb.flush()
            del self._emb
            write_json(self.dir / "corpus.json", self.meta.to_dict())
            self._ctx.__exit__(None, None, None)
            return
        del self._emb
        error = own_error or exc
        self._ctx.__exit__(type(error), error, tb)  # removes the temporary directory
        if own_error is not None:
            raise own_error


def write_corpus(
    out: str | Path,
    *,
    ids: Sequence[str],
    captions: Sequence[Sequence[str]],
    embeddings: np.ndarray,
    queries: dict[str, Iterable[Query | dict[str, Any]]] | None = None,
    name: str = "corpus",
    modality: str = "other",
    embedding_model: str = "unknown",
    sources: Sequence[str | None] | None = None,
    oracle: dict[str, dict[str, float]] | None = None,
    caption_embeddings: np.ndarray | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Write a whole in-memory corpus in one call (see :class:`CorpusWriter` for streaming)."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise CorpusError(f"embeddings must be [N, D], got shape {embeddings.shape}")
    with CorpusWriter(out, name=name, modality=modality, embedding_dim=embeddings.shape[1],
                      num_items=len(ids), embedding_model=embedding_model, dtype=dtype,
                      overwrite=overwrite) as writer:
        writer.add_items(ids, captions, embeddings, sources)
        for split, qs in (queries or {}).items():
            writer.write_queries(split, qs)
        if oracle is not None:
            writer.write_oracle(oracle)
        if caption_embeddings is not None:
            writer.write_caption_embeddings(caption_embeddings)
    return Path(out)


def summarize(corpus: Corpus) -> dict[str, Any]:
    """Summary used by ``gcmr validate``: sizes, dtype, captions per item, query splits."""
    caps = [len(c) for c in corpus.captions] if corpus._captions is not None else []
    return {
        "path": str(corpus.path),
        "name": corpus.meta.name,
        "modality": corpus.meta.modality,
        "embedding_model": corpus.meta.embedding_model,
        "items": len(corpus),
        "dim": corpus.dim,
        "dtype": str(corpus.embeddings.dtype),
        "captions_per_item": {
            "mean": float(np.mean(caps)) if caps else 0.0,
            "min": int(min(caps)) if caps else 0,
            "max": int(max(caps)) if caps else 0,
        },
        "splits": {name: len(qs) for name, qs in sorted(corpus.queries.items())},
        "oracle": corpus.oracle,
        "caption_embeddings": (corpus.path / "caption_embeddings.npy").exists(),
        "fingerprint": corpus.fingerprint,
    }
