"""The identifier index: codes of every item, the prefix trie, the fitted scheme; saved as a
directory (manifest ``gcmr-index`` v1 + ``ids.npy`` + ``item_ids.json`` + safetensors).

```
<index>/
  manifest.json        format, version, scheme, (adapted) config, level sizes, stats (with
                       degenerate-data ``warnings``), scheme state info, absolute corpus path
                       and fingerprint, library versions, ``sha256`` of the four files below
  ids.npy              int64 [N, L] level-local codes, row i = item i; last column = unique counter
  item_ids.json        the corpus item ids in row order (search needs no corpus)
  trie.safetensors     per-level CSR transition tables (gcmr.ids.trie.Trie)
  scheme.safetensors   the fitted scheme's tensors (K-Means centroids, RQ-VAE weights, ...)
  deleted.npy          optional: int64 [n] sorted rows of deleted items (live updates,
                       :mod:`gcmr.search.updates`): they keep their row and identifier (never
                       reused) but are not in the trie, so no search returns them
```

Loading verifies the recorded sha256 of every file (``verify=False`` skips it; an index from
before checksums has none and is not verified), so an edited ``item_ids.json`` (e.g. two ids
swapped) is refused instead of returning wrong ids. ``index_fingerprint`` (what a model is
bound to) is unchanged: it covers the corpus fingerprint and the codes, and the checksum of
``item_ids.json`` covers the ids, so models trained before checksums still match their index.

Token ids are level-tagged: position ``l`` owns the range ``token_offsets[l] ..
token_offsets[l] + level_sizes[l] - 1`` of one shared vocabulary, so a token id says its level.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcmr.artifacts import (
    atomic_dir,
    load_tensors,
    read_manifest,
    save_tensors,
    verify_checksums,
    write_json,
    write_manifest,
)
from gcmr.errors import ArtifactError, ConfigError
from gcmr.ids.config import IndexConfig
from gcmr.ids.schemes import IdScheme, get_scheme
from gcmr.ids.stats import DataWarning, RowScan, degenerate_warnings, index_stats, unique_counter
from gcmr.ids.trie import Trie

FORMAT = "gcmr-index"
VERSION = 1
IDS_FILE = "ids.npy"
ITEM_IDS_FILE = "item_ids.json"
TRIE_FILE = "trie.safetensors"
SCHEME_FILE = "scheme.safetensors"
DELETED_FILE = "deleted.npy"
# checksummed in the manifest (deleted.npy only where an update wrote one)
DATA_FILES = (IDS_FILE, ITEM_IDS_FILE, TRIE_FILE, SCHEME_FILE, DELETED_FILE)


def level_names(scheme: str, num_semantic: int) -> list[str]:
    """Human names of the L positions, e.g. ``coarse, fine1, fine2, unique`` for CART."""
    if scheme == "cart" and num_semantic:
        names = ["coarse"] + [f"fine{i}" for i in range(1, num_semantic)]
    elif scheme in ("rq", "avg"):
        names = [f"rq{i}" for i in range(1, num_semantic + 1)]
    else:
        names = [f"level{i}" for i in range(1, num_semantic + 1)]
    return names + ["unique"]


@dataclass
class SemanticIndex:
    """Identifiers of every corpus item and everything needed to decode them."""

    config: IndexConfig
    codes: np.ndarray  # int64 [N, L]; last column = unique counter
    level_sizes: list[int]
    item_ids: list[str]
    trie: Trie
    stats: dict[str, Any]
    corpus_path: str
    corpus_fingerprint: str
    scheme: IdScheme
    timing: dict[str, float] = field(default_factory=dict)
    # sorted rows of deleted items: not in the trie (live updates); their rows stay
    deleted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def num_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def length(self) -> int:
        """Identifier length L (semantic levels + the unique counter)."""
        return int(self.codes.shape[1])

    @property
    def token_offsets(self) -> list[int]:
        """Global token id of code ``c`` at position ``l`` is ``token_offsets[l] + c``."""
        return [int(v) for v in np.concatenate([[0], np.cumsum(self.level_sizes)[:-1]])]

    @property
    def vocab_size(self) -> int:
        """Size of the level-tagged identifier vocabulary (sum of the level sizes)."""
        return int(sum(self.level_sizes))

    @property
    def level_names(self) -> list[str]:
        return level_names(self.config.scheme, self.length - 1)

    def to_tokens(self, codes: np.ndarray) -> np.ndarray:
        """Level-local codes [..., L] -> global level-tagged token ids."""
        return np.asarray(codes, dtype=np.int64) + np.asarray(self.token_offsets, dtype=np.int64)

    def from_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """Global token ids [..., L] -> level-local codes (inverse of :meth:`to_tokens`)."""
        return np.asarray(tokens, dtype=np.int64) - np.asarray(self.token_offsets, dtype=np.int64)

    def encode(self, embeddings: Any) -> np.ndarray:
        """Semantic codes [n, L - 1] of new rows with the fitted scheme (no counter); rows in
        the view the index was fitted on (``config.fit_view``, :mod:`gcmr.ids.views`)."""
        return self.scheme.encode(embeddings)

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """Item row of each complete identifier [B, L], or -1 where no item has it."""
        return self.trie.lookup(codes)

    # ------------------------------------------------------------------ live updates

    @property
    def num_live(self) -> int:
        """Items in the trie (all rows but the deleted ones)."""
        return self.num_items - len(self.deleted)

    def live_rows(self) -> np.ndarray:
        """Rows of the items not deleted, ascending."""
        live = np.ones(self.num_items, dtype=bool)
        live[self.deleted] = False
        return np.flatnonzero(live)

    def next_counters(self, semantic: np.ndarray) -> np.ndarray:
        """Unique counters [A] for new items with semantic codes ``semantic`` [A, L - 1]: in
        each group of equal semantic codes, the next free values after every existing row's
        (deleted rows included: an identifier is never reused), in row order among the new
        items. The same rule as :func:`~gcmr.ids.stats.unique_counter`, continued."""
        semantic = np.asarray(semantic, dtype=np.int64).reshape(-1, self.length - 1)
        n_old = self.num_items
        sem = np.concatenate([self.codes[:, :-1], semantic])
        if len(sem) == 0:
            return np.zeros(0, dtype=np.int64)
        if sem.shape[1]:
            order = np.lexsort(sem.T[::-1])
            srt = sem[order]
            starts = np.ones(len(sem), dtype=bool)
            starts[1:] = (srt[1:] != srt[:-1]).any(axis=1)
            gid = np.empty(len(sem), dtype=np.int64)
            gid[order] = np.cumsum(starts) - 1
        else:  # one token per item (atomic): one group
            gid = np.zeros(len(sem), dtype=np.int64)
        free = np.zeros(int(gid.max()) + 1, dtype=np.int64)
        np.maximum.at(free, gid[:n_old], self.codes[:, -1] + 1)
        new_gid = gid[n_old:]
        return free[new_gid] + unique_counter(new_gid[:, None])

    def with_items(self, semantic: np.ndarray, item_ids: list[str]) -> SemanticIndex:
        """A new index with items appended (rows ``num_items ..``): their identifiers are
        ``semantic`` [A, L - 1] + :meth:`next_counters`; the unique level grows when a counter
        passes its size. Ids must be new (the caller checks and names them)."""
        semantic = np.asarray(semantic, dtype=np.int64).reshape(-1, self.length - 1)
        if len(semantic) != len(item_ids):
            raise ConfigError(f"{len(item_ids)} item ids for {len(semantic)} identifiers")
        counters = self.next_counters(semantic)
        codes = np.concatenate([self.codes, np.concatenate([semantic, counters[:, None]],
                                                            axis=1)])
        sizes = list(self.level_sizes)
        if len(counters):
            sizes[-1] = max(sizes[-1], int(counters.max()) + 1)
        return self._replaced(codes=codes, level_sizes=sizes,
                              item_ids=list(self.item_ids) + list(item_ids),
                              deleted=self.deleted)

    def without_rows(self, rows: np.ndarray) -> SemanticIndex:
        """A new index with item ``rows`` deleted (out of the trie; rows and ids stay)."""
        deleted = np.union1d(self.deleted, np.asarray(rows, dtype=np.int64))
        return self._replaced(codes=self.codes, level_sizes=list(self.level_sizes),
                              item_ids=list(self.item_ids), deleted=deleted)

    def _replaced(self, *, codes: np.ndarray, level_sizes: list[int], item_ids: list[str],
                  deleted: np.ndarray) -> SemanticIndex:
        deleted = np.asarray(deleted, dtype=np.int64)
        live = np.ones(len(codes), dtype=bool)
        live[deleted] = False
        rows = np.flatnonzero(live)
        trie = Trie.build(codes[rows], level_sizes, rows=rows)
        stats = dict(self.stats)
        stats["live_items"] = len(rows)
        stats["deleted_items"] = len(deleted)
        return SemanticIndex(config=self.config, codes=codes, level_sizes=list(level_sizes),
                             item_ids=item_ids, trie=trie, stats=stats,
                             corpus_path=self.corpus_path,
                             corpus_fingerprint=self.corpus_fingerprint, scheme=self.scheme,
                             timing=dict(self.timing), deleted=deleted)

    # ------------------------------------------------------------------ persistence

    def save(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Write the index directory atomically, with the sha256 of every data file in the
        manifest; returns its path."""
        out = Path(out)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            np.save(tmp / IDS_FILE, np.ascontiguousarray(self.codes, dtype=np.int64),
                    allow_pickle=False)
            write_json(tmp / ITEM_IDS_FILE, list(self.item_ids))
            save_tensors(tmp / TRIE_FILE, self.trie.state_dict())
            save_tensors(tmp / SCHEME_FILE, self.scheme.state_dict())
            if len(self.deleted):
                np.save(tmp / DELETED_FILE, np.ascontiguousarray(self.deleted, dtype=np.int64),
                        allow_pickle=False)
            write_manifest(
                tmp, fmt=FORMAT, version=VERSION, checksum_files=DATA_FILES,
                scheme=self.config.scheme,
                config=self.config.to_dict(),
                num_items=self.num_items,
                **({"num_deleted": len(self.deleted)} if len(self.deleted) else {}),
                length=self.length,
                level_sizes=list(self.level_sizes),
                level_names=self.level_names,
                token_offsets=self.token_offsets,
                vocab_size=self.vocab_size,
                stats=self.stats,
                timing=self.timing,
                scheme_state=self.scheme.state_info(),
                corpus_path=str(Path(self.corpus_path).resolve()) if self.corpus_path else "",
                corpus_fingerprint=self.corpus_fingerprint,
            )
        return out

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> SemanticIndex:
        """Read an index directory; a missing, corrupted or inconsistent file raises
        :class:`ArtifactError` naming it. ``verify`` checks the files' recorded sha256
        (:func:`gcmr.artifacts.verify_checksums`, about 1 GB/s)."""
        path = Path(path)
        manifest = read_manifest(path, fmt=FORMAT)
        if verify:
            verify_checksums(path, manifest)
        where = path / "manifest.json"
        try:
            from gcmr.ids.config import LEGACY_FIELDS

            config = IndexConfig.from_dict({**LEGACY_FIELDS, **manifest["config"]},
                                           where=f"{where}: config")
            level_sizes = [int(v) for v in manifest["level_sizes"]]
            num_items = int(manifest["num_items"])
            length = int(manifest["length"])
            scheme_info = manifest["scheme_state"]
            stats = dict(manifest.get("stats", {}))
            fingerprint = str(manifest["corpus_fingerprint"])
            corpus_path = str(manifest.get("corpus_path", ""))
        except KeyError as exc:
            raise ArtifactError(f"{where}: missing field {exc}") from exc
        except (ConfigError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}: bad field ({exc})") from exc
        codes = _load_codes(path / IDS_FILE, num_items, length)
        item_ids = _load_item_ids(path / ITEM_IDS_FILE, num_items)
        deleted = _load_deleted(path / DELETED_FILE, num_items)
        if len(level_sizes) != length:
            raise ArtifactError(f"{where}: level_sizes has {len(level_sizes)} entries, length is {length}")
        if num_items and ((codes.min(axis=0) < 0).any()
                          or (codes.max(axis=0) >= np.asarray(level_sizes)).any()):
            raise ArtifactError(f"{path / IDS_FILE}: codes fall outside the level sizes {level_sizes}")
        trie = Trie.from_state_dict(load_tensors(path / TRIE_FILE))
        if trie.level_sizes != level_sizes or trie.num_levels != length or \
                (length and len(trie.targets[-1]) != num_items - len(deleted)):
            raise ArtifactError(f"{path / TRIE_FILE}: trie does not match the identifiers "
                                f"(levels {trie.level_sizes}, expected {level_sizes})")
        scheme_cls = get_scheme_or_artifact_error(config.scheme, where)
        scheme = scheme_cls.from_state(config, load_tensors(path / SCHEME_FILE), scheme_info)
        return cls(config=config, codes=codes, level_sizes=level_sizes, item_ids=item_ids,
                   trie=trie, stats=stats, corpus_path=corpus_path,
                   corpus_fingerprint=fingerprint, scheme=scheme,
                   timing=dict(manifest.get("timing", {})), deleted=deleted)


def get_scheme_or_artifact_error(name: str, where: Path) -> type[IdScheme]:
    try:
        return get_scheme(name)
    except ConfigError as exc:
        raise ArtifactError(f"{where}: {exc}") from exc


def _load_codes(path: Path, num_items: int, length: int) -> np.ndarray:
    if not path.is_file():
        raise ArtifactError(f"{path}: missing identifier file")
    try:
        codes = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for bad files
        raise ArtifactError(f"{path}: corrupted identifier file ({exc})") from exc
    if codes.dtype != np.int64 or codes.shape != (num_items, length):
        raise ArtifactError(f"{path}: expected int64 [{num_items}, {length}], "
                            f"got {codes.dtype} {list(codes.shape)}")
    return codes


def _load_item_ids(path: Path, num_items: int) -> list[str]:
    if not path.is_file():
        raise ArtifactError(f"{path}: missing item id file")
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: corrupted item id file ({exc})") from exc
    if not isinstance(ids, list) or len(ids) != num_items or not all(isinstance(i, str) for i in ids):
        raise ArtifactError(f"{path}: expected a list of {num_items} item id strings")
    return ids


def _load_deleted(path: Path, num_items: int) -> np.ndarray:
    """The deleted rows (none when the file is absent: an index without deletions)."""
    if not path.is_file():
        return np.zeros(0, dtype=np.int64)
    try:
        rows = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for bad files
        raise ArtifactError(f"{path}: corrupted deleted-rows file ({exc})") from exc
    if rows.dtype != np.int64 or rows.ndim != 1 or (len(rows) and (
            rows.min() < 0 or rows.max() >= num_items or np.any(np.diff(rows) <= 0))):
        raise ArtifactError(f"{path}: expected sorted unique int64 rows in [0, {num_items})")
    return rows


def assemble(semantic: np.ndarray, semantic_sizes: list[int]) -> tuple[np.ndarray, list[int]]:
    """Append the unique counter to semantic codes: ``(codes [N, S + 1], level_sizes)``."""
    counter = unique_counter(semantic)
    codes = np.concatenate([np.asarray(semantic, dtype=np.int64), counter[:, None]], axis=1)
    unique_size = int(counter.max()) + 1 if len(counter) else 1
    return codes, list(semantic_sizes) + [unique_size]


def build_index(corpus: Any, config: IndexConfig, *, show_progress: bool = True,
                threads: int = 0) -> SemanticIndex:
    """Fit ``config.scheme`` on the corpus embeddings, encode every item in chunks, append the
    unique counter, build the trie and compute the health statistics.

    Degenerate data (all-zero or duplicate embedding rows, found in the encode pass by
    :class:`~gcmr.ids.stats.RowScan`, and a collision rate that says the embeddings carry no
    information) is reported in ``stats["embeddings"]`` and ``stats["warnings"]`` and raised
    as :class:`~gcmr.ids.stats.DataWarning` (``gcmr index`` prints them).

    ``threads`` > 0 sets torch's intra-op threads for the build (restored afterwards); on a
    busy machine one thread is often faster than oversubscribed cores.
    """
    if threads > 0:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return build_index(corpus, config, show_progress=show_progress)
        finally:
            torch.set_num_threads(previous)
    from gcmr.progress import progress

    config.validate()
    if config.device != "cpu":
        raise ConfigError(f"index option device: {config.device!r} is not supported yet; "
                          f"identifier fitting runs on cpu")
    if len(corpus.embeddings) == 0:
        raise ConfigError(f"{corpus.path}: the corpus has no items to index")
    from gcmr.ids.views import fit_view

    embeddings, view_info = fit_view(corpus, config, show_progress=show_progress)
    n = len(embeddings)
    scheme = get_scheme(config.scheme)(config)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    scheme.fit(embeddings, corpus=corpus, show_progress=show_progress)
    t_fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    batch = scheme.config_.encode_batch_size
    semantic = np.empty((n, len(scheme.semantic_sizes_)), dtype=np.int64)
    scan = RowScan(int(embeddings.shape[1]))  # zero / duplicate rows, in the same pass
    with progress(disable=not show_progress) as bar:
        task = bar.add_task("encode", total=n, info="")
        for start in range(0, n, batch):
            chunk = embeddings[start:start + batch]
            semantic[start:start + batch] = scheme.encode(chunk)
            scan.update(chunk)
            bar.update(task, completed=min(n, start + batch))
    t_encode = time.perf_counter() - t1
    t2 = time.perf_counter()
    codes, sizes = assemble(semantic, scheme.semantic_sizes_)
    del semantic
    trie = Trie.build(codes, sizes)
    stats = index_stats(codes, sizes, level_names(config.scheme, len(sizes) - 1))
    stats["fit"] = {**scheme.fit_info_, "view": view_info}
    stats["embeddings"] = scan.result()
    stats["warnings"] = degenerate_warnings(stats["embeddings"], stats, sizes, list(corpus.ids))
    for message in stats["warnings"]:
        warnings.warn(f"{corpus.path}: {message}", DataWarning, stacklevel=2)
    t_trie = time.perf_counter() - t2
    timing = {"fit_s": round(t_fit, 3), "encode_s": round(t_encode, 3),
              "trie_and_stats_s": round(t_trie, 3),
              "total_s": round(time.perf_counter() - t0, 3),
              "cpu_s": round(time.process_time() - cpu0, 3), "threads": torch.get_num_threads()}
    return SemanticIndex(config=scheme.config_, codes=codes, level_sizes=sizes,
                         item_ids=list(corpus.ids), trie=trie, stats=stats,
                         corpus_path=str(Path(corpus.path).resolve()),
                         corpus_fingerprint=corpus.fingerprint,
                         scheme=scheme, timing=timing)


def load_index(path: str | Path, *, corpus: Any = None, verify: bool = True) -> SemanticIndex:
    """Load an index directory; with ``corpus``, refuse an index built from another corpus.
    ``verify`` checks the recorded sha256 of its files."""
    index = SemanticIndex.load(path, verify=verify)
    if corpus is not None and corpus.fingerprint != index.corpus_fingerprint:
        raise ArtifactError(
            f"{path}: index was built from a different corpus (fingerprint "
            f"{index.corpus_fingerprint}, built from {index.corpus_path or 'unknown'}) but "
            f"{corpus.path} has fingerprint {corpus.fingerprint}; rebuild it with "
            f"`gcmr index {corpus.path} {path} --overwrite`")
    return index


def load_index_and_corpus(index_path: str | Path, corpus_path: str | Path | None = None, *,
                          load_captions: bool = True,
                          verify: bool = True) -> tuple[SemanticIndex, Any]:
    """Load an index and the corpus it was built from (``corpus_path``, or the path the index
    recorded: absolute since checksummed indexes; an older relative one is tried against the
    working directory, then the index directory); refuse a corpus whose fingerprint
    differs."""
    from gcmr.corpus import load_corpus

    index = load_index(index_path, verify=verify)
    path = Path(corpus_path) if corpus_path else Path(index.corpus_path)
    if not path.is_absolute() and not path.exists():
        path = Path(index_path) / path
    corpus = load_corpus(path, load_captions=load_captions)
    if corpus.fingerprint != index.corpus_fingerprint:
        raise ArtifactError(
            f"index {index_path} was built from a corpus with fingerprint "
            f"{index.corpus_fingerprint}, but {path} has fingerprint {corpus.fingerprint}; "
            f"rebuild the index with `gcmr index {path} ...`"
        )
    return index, corpus
