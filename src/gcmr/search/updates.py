"""Live add and delete: change a trained generative model's collection without retraining.

``add`` gives new items identifiers with the index's fitted scheme (``SemanticIndex.encode``
of their rows in the index's fit view, then the next free unique counter of their semantic
code, as the scheme's uniqueness rule does), and extends the trie, so they are retrievable by
their prefixes at once: by constrained beam search, by the hybrid rerank's candidate expansion
and item vectors, and by query by example. ``delete`` takes items out of the trie (and out of
every candidate list) at once. A short fine-tune on the new items' captions with replayed old
pairs (DSI++) lives in :mod:`gcmr.train.finetune` (search never imports train).

Where an updated model keeps its state (the original corpus and index are never touched)::

    MODEL/
      manifest.json        as written by training, plus ``updates``: {"version": n,
                           "index": "index", "additions": "additions" | null,
                           "additions_fingerprint", "base_index": the training index's record,
                           "log": [{"version", "op": add | delete | finetune | compress
                           (gcmr compress-vectors), "count", "ids" (at most 100), "at",
                           "seconds", ...}]}; ``index`` then describes
                           MODEL/index, and ``model_config.level_sizes`` the grown unique level
      index/               the current identifier index (a gcmr-index directory: every row,
                           ``deleted.npy``); its ``corpus_fingerprint`` combines the base
                           corpus's and the additions' fingerprints
      additions/           a corpus v1 directory of every added item (rows N.. of the index,
                           after the N rows of the training corpus); deleted items stay in it
      caption_vectors.npy  extended with the added items' captions (pretrained encoders)
      item_codes.npy       compact item vectors (gcmr.search.compact), when the model keeps
                           them: extended with the added items' codes (same codebook)
      model.safetensors    the unique level's rows grown when a counter passed its size

Row ``r < N`` is row ``r`` of the training corpus (whose fingerprint the model still checks,
unchanged); row ``N + a`` is row ``a`` of ``additions/``, whose files the model manifest
checksums. Deleted items keep their row, id and identifier: none of them is reused (adding
an item under a deleted id is refused).

Every write replaces the model directory crash-safely (:func:`gcmr.artifacts.atomic_dir`:
files are hard-linked or copied into a temporary sibling, the changed ones rewritten, then one
swap): until the swap the old directory is complete and loadable. Writers of one model are
serialized by an ``flock`` on ``.<name>.update.lock`` beside it, and a writer whose in-memory
version is older than the directory's is refused (reload and retry).

The same operations run on a loaded :class:`~gcmr.search.retriever.Retriever`
(``retriever.add_items(items)``, ``retriever.delete_items(ids)``): the new state is built
aside, saved (``save=True``), then swapped in, so a server applies them without reloading.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcmr.artifacts import MANIFEST, atomic_dir, read_npy
from gcmr.errors import ArtifactError, ConfigError, CorpusError, GcmrError

UPDATES = "updates"  # manifest field
INDEX_DIR = "index"
ADDITIONS_DIR = "additions"
ADDITION_FILES = (f"{ADDITIONS_DIR}/items.jsonl", f"{ADDITIONS_DIR}/embeddings.npy",
                  f"{ADDITIONS_DIR}/corpus.json")
LOG_IDS = 100  # ids recorded per log entry
CHUNK = 1 << 16  # rows copied per step when rewriting embeddings


class UpdateError(GcmrError):
    """A live update that cannot be applied (duplicate or unknown id, bad embeddings)."""


class UpdateConflict(UpdateError):
    """An added id that the model already holds, or held and deleted (ids are not reused)."""


class UnknownItemError(UpdateError):
    """A deleted id that the model does not hold (or no longer holds)."""


# ----------------------------------------------------------------------------- new items


@dataclass
class NewItems:
    """Items to add: ids, captions (their pseudo-queries), embeddings [A, D] in the corpus's
    item space, optional sources; ``origin`` names where they came from in messages."""

    ids: list[str]
    captions: list[list[str]]
    embeddings: np.ndarray
    sources: list[str | None] | None = None
    origin: str = "new items"
    caption_embeddings: np.ndarray | None = None  # optional [A, D_text] (captions/joint views)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def read(cls, source: str | Path, *, embeddings: str | Path | None = None) -> NewItems:
        """Items from a corpus directory (corpus format v1, validated by
        :func:`gcmr.corpus.load_corpus`; its queries are ignored) or from an ``items.jsonl``
        file (validated by :func:`gcmr.corpus.read_items`) with its embeddings ``.npy``
        (``embeddings``, default the same path with the suffix ``.npy``; row i = line i)."""
        from gcmr.corpus import load_corpus, read_items

        source = Path(source)
        if source.is_dir():
            corpus = load_corpus(source)
            caps = corpus.caption_embeddings()
            return cls(list(corpus.ids), [list(c) for c in corpus.captions],
                       np.asarray(corpus.embeddings), list(corpus.sources or []) or None,
                       origin=str(source),
                       caption_embeddings=None if caps is None else np.asarray(caps))
        if not source.is_file():
            raise UpdateError(f"{source}: no such corpus directory or items JSONL file")
        if embeddings is not None and source.suffix == ".npy":
            raise UpdateError(f"{source}: pass the items JSONL file, not the embeddings")
        ids, captions, sources = read_items(source)
        emb_path = Path(embeddings) if embeddings is not None else source.with_suffix(".npy")
        arr = read_npy(emb_path, error=UpdateError,
                       missing=f"missing embeddings for {source} (pass them with "
                               f"--embeddings FILE.npy: one row per line of {source.name})")
        if arr.ndim != 2 or len(arr) != len(ids):
            raise UpdateError(f"{emb_path}: expected [{len(ids)}, D] (one row per line of "
                              f"{source}), got shape {list(arr.shape)}")
        return cls(list(ids), [list(c) for c in captions or []], arr,
                   list(sources) if sources else None, origin=str(emb_path))

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]], *,
                     origin: str = "request") -> NewItems:
        """Items from JSON objects ``{"id", "captions": [...], "embedding": [...],
        "source"?}`` (a server's request body); bad fields name the record."""
        if isinstance(records, dict) or not isinstance(records, Sequence) or not records:
            raise UpdateError(f"{origin}: expected a non-empty list of items")
        ids, caps, rows, sources = [], [], [], []
        for i, rec in enumerate(records):
            where = f"{origin} item {i}"
            if not isinstance(rec, dict):
                raise UpdateError(f"{where}: expected an object")
            item_id, captions = rec.get("id"), rec.get("captions", [])
            if not isinstance(item_id, str) or not item_id:
                raise UpdateError(f"{where}: field 'id' must be a non-empty string")
            if not isinstance(captions, list) or not all(
                    isinstance(c, str) and c.strip() for c in captions):
                raise UpdateError(f"{where} ({item_id!r}): field 'captions' must be a list of "
                                  f"non-empty strings")
            vec = rec.get("embedding")
            if not isinstance(vec, list) or not vec or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in vec):
                raise UpdateError(f"{where} ({item_id!r}): field 'embedding' must be a list "
                                  f"of numbers")
            source = rec.get("source")
            if source is not None and not isinstance(source, str):
                raise UpdateError(f"{where} ({item_id!r}): field 'source' must be a string")
            ids.append(item_id)
            caps.append(list(captions))
            rows.append(vec)
            sources.append(source)
        if len({len(r) for r in rows}) != 1:
            raise UpdateError(f"{origin}: the items' embeddings have different lengths")
        return cls(ids, caps, np.asarray(rows, dtype=np.float32), sources, origin=origin)

    def check(self, dim: int) -> None:
        """Refuse empty input, wrong shapes, a dimension other than ``dim``, NaN or Inf
        rows and duplicate ids, naming the id (and the source)."""
        n = len(self.ids)
        if n == 0:
            raise UpdateError(f"{self.origin}: no items to add")
        if len(self.captions) != n or (self.sources is not None and len(self.sources) != n):
            raise UpdateError(f"{self.origin}: {n} ids but {len(self.captions)} caption lists")
        emb = self.embeddings
        if getattr(emb, "ndim", 0) != 2 or len(emb) != n:
            raise UpdateError(f"{self.origin}: embeddings must be [{n}, {dim}], got "
                              f"{list(getattr(emb, 'shape', []))}")
        if emb.shape[1] != dim:
            raise UpdateError(f"{self.origin}: embeddings have dimension {emb.shape[1]}, the "
                              f"model's items have {dim}")
        if emb.dtype.kind != "f":
            raise UpdateError(f"{self.origin}: embeddings must be floats, got {emb.dtype}")
        bad = np.flatnonzero(~np.isfinite(np.asarray(emb, dtype=np.float32)).all(axis=1))
        if len(bad):
            raise UpdateError(f"{self.origin}: the embedding of {self.ids[int(bad[0])]!r} "
                              f"(row {int(bad[0])}) contains NaN or Inf"
                              + (f" ({len(bad)} rows in all)" if len(bad) > 1 else ""))
        seen: dict[str, int] = {}
        for i, item_id in enumerate(self.ids):
            if not isinstance(item_id, str) or not item_id:
                raise UpdateError(f"{self.origin} row {i}: the id must be a non-empty string")
            if item_id in seen:
                raise UpdateError(f"{self.origin}: duplicate id {item_id!r} (rows {seen[item_id]} "
                                  f"and {i})")
            seen[item_id] = i

    def as_corpus(self) -> Any:
        """An in-memory :class:`gcmr.corpus.Corpus` of these items (what the index's fit
        view, :func:`gcmr.ids.views.fit_view`, reads)."""
        from gcmr.corpus import Corpus, CorpusMeta

        meta = CorpusMeta(name="additions", modality="other",
                          embedding_dim=int(self.embeddings.shape[1]), num_items=len(self),
                          embedding_model="unknown")
        corpus = Corpus(Path(self.origin), meta, list(self.ids), self.captions,
                        self.sources or [None] * len(self), self.embeddings, {}, None, "")
        if self.caption_embeddings is not None:
            corpus.caption_embeddings = lambda: self.caption_embeddings  # type: ignore
        return corpus


# ----------------------------------------------------------------------------- additions


@dataclass
class Additions:
    """Every item added to a model so far (rows ``base_rows ..`` of its index): ids,
    captions, sources and embeddings parts (the saved memory map, then rows added in
    memory)."""

    ids: list[str] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)
    sources: list[str | None] = field(default_factory=list)
    parts: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def embeddings(self) -> Any:
        from gcmr.search.rerank import StackedRows

        return self.parts[0] if len(self.parts) == 1 else StackedRows(self.parts)

    @classmethod
    def open(cls, model_dir: Path, manifest: dict[str, Any]) -> Additions:
        """The ``additions/`` corpus of an updated model (empty when none was added), its
        embeddings memory-mapped; refuses one whose fingerprint differs from the record."""
        from gcmr.corpus import corpus_fingerprint, load_corpus

        info = manifest.get(UPDATES) or {}
        if not info.get("additions"):
            return cls()
        path = Path(model_dir) / info["additions"]
        corpus = load_corpus(path, check_finite=False)
        if corpus_fingerprint(path) != info.get("additions_fingerprint"):
            raise ArtifactError(f"{path}: the added items changed since the model recorded "
                                f"them (fingerprint mismatch)")
        return cls(list(corpus.ids), [list(c) for c in corpus.captions],
                   list(corpus.sources or [None] * len(corpus)), [corpus.embeddings])

    def plus(self, items: NewItems) -> Additions:
        return Additions(self.ids + list(items.ids), self.captions + list(items.captions),
                         self.sources + list(items.sources or [None] * len(items)),
                         self.parts + [np.asarray(items.embeddings)])

    def write(self, out: Path, *, dtype: Any, base_meta: Any) -> str:
        """Write them as a corpus v1 directory; returns its fingerprint."""
        from gcmr.corpus import CorpusWriter, corpus_fingerprint

        dim = int(self.parts[0].shape[1])
        with CorpusWriter(out, name=f"{getattr(base_meta, 'name', 'corpus')}-additions",
                          modality=getattr(base_meta, "modality", "other"), embedding_dim=dim,
                          num_items=len(self), overwrite=True,
                          embedding_model=getattr(base_meta, "embedding_model", "unknown"),
                          dtype=str(np.dtype(dtype))) as writer:
            start = 0
            for part in self.parts:
                for a in range(0, len(part), CHUNK):
                    block = np.asarray(part[a:a + CHUNK])
                    stop = start + len(block)
                    writer.add_items(self.ids[start:stop], self.captions[start:stop], block,
                                     self.sources[start:stop])
                    start = stop
        return corpus_fingerprint(out)


# ----------------------------------------------------------------------------- results


@dataclass
class UpdateResult:
    """What one update did."""

    op: str  # add | delete | finetune
    version: int
    ids: list[str]
    rows: list[int]
    num_items: int  # rows of the index (deleted ones included)
    num_live: int
    level_sizes: list[int]
    grown: bool = False  # the unique level grew (the model's output rows too)
    seconds: float = 0.0
    saved: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "version": self.version, "count": len(self.ids),
                "ids": self.ids[:LOG_IDS], "rows": self.rows[:LOG_IDS],
                "num_items": self.num_items, "num_live": self.num_live,
                "level_sizes": self.level_sizes, "grown": self.grown,
                "seconds": round(self.seconds, 4), "saved": self.saved, **self.details}


def update_version(manifest: dict[str, Any]) -> int:
    """The manifest's update counter (0: as trained)."""
    return int((manifest.get(UPDATES) or {}).get("version", 0))


# ----------------------------------------------------------------------------- in memory


@dataclass
class _State:
    """A retriever's updatable state, built aside and swapped in at once."""

    index: Any
    model: Any
    item_vectors: Any
    additions: Additions
    caption_parts: tuple[Any, np.ndarray] | None  # (vectors, offsets) when the model has them
    manifest: dict[str, Any]
    model_changed: bool = False  # weights to write (grown or fine-tuned)
    compact: Any = None  # CompactItemVectors to write (items were added to them)


def base_rows(retriever: Any) -> int:
    """Rows of the training corpus (the index's rows before any addition)."""
    return retriever.index.num_items - len(retriever.additions)


def item_dim(retriever: Any) -> int:
    """The item embedding dimension of a retriever's corpus."""
    vectors = getattr(retriever.item_vectors, "items", None)
    if vectors is not None:
        return int(vectors.shape[1])
    compact = getattr(retriever.item_vectors, "dim", None)  # CompactItemVectors
    if compact is not None:
        return int(compact)
    if len(retriever.additions):
        return int(retriever.additions.parts[0].shape[1])
    path = Path(retriever.corpus_path) / "embeddings.npy"
    if path.is_file():
        from gcmr.search.rerank import open_item_embeddings

        return int(open_item_embeddings(retriever.corpus_path).shape[1])
    dim = getattr(retriever.index.scheme, "dim_", None)
    if dim is not None and retriever.index.config.fit_view == "embeddings":
        return int(dim)
    raise CorpusError(f"{path}: missing, so the item embedding dimension is unknown (pass "
                      f"the corpus with --corpus)")


def add_to(retriever: Any, items: NewItems, *, save: bool = True,
           show_progress: bool = False) -> UpdateResult:
    """Add ``items`` to a loaded retriever (and, with ``save``, to its model directory)."""
    from gcmr.ids.views import fit_view

    with retriever.update_lock:
        started = time.perf_counter()
        items.check(item_dim(retriever))
        live_ids = retriever.row_of_id()
        known = set(retriever.index.item_ids)
        for item_id in items.ids:
            if item_id in live_ids:
                raise UpdateConflict(f"{items.origin}: id {item_id!r} already exists in "
                                  f"{retriever.path} (row {live_ids[item_id]})")
            if item_id in known:
                raise UpdateConflict(f"{items.origin}: id {item_id!r} was deleted from "
                                  f"{retriever.path}; ids are not reused, add it under a new id")
        index = retriever.index
        view, _ = fit_view(items.as_corpus(), index.config, show_progress=show_progress)
        semantic = index.encode(view)
        new_index = index.with_items(semantic, list(items.ids))
        rows = list(range(index.num_items, new_index.num_items))
        grown = new_index.level_sizes != index.level_sizes
        model = grow_model(retriever.model, new_index.level_sizes) if grown else retriever.model
        additions = retriever.additions.plus(items)
        item_vectors = retriever.item_vectors
        from gcmr.search.compact import CompactItemVectors
        from gcmr.search.rerank import BlendedVectors, CaptionVectors, ItemVectors, StackedRows

        blend = item_vectors.text_weight if isinstance(item_vectors, BlendedVectors) else None
        if isinstance(item_vectors, (ItemVectors, BlendedVectors)):
            item_vectors = ItemVectors(StackedRows(_base_parts(retriever) + additions.parts))
        # compact item vectors the model keeps (in use, or recorded while this retriever
        # searches otherwise): the new items encoded with the same codebook
        compact = _compact_vectors(retriever)
        if compact is not None:
            compact = compact.plus(items.embeddings)
            if isinstance(item_vectors, CompactItemVectors):
                item_vectors = compact
        caption_parts = _extended_captions(retriever, model, items)
        if isinstance(item_vectors, CaptionVectors) and caption_parts is not None:
            item_vectors = CaptionVectors(*caption_parts)
        if blend is not None and caption_parts is not None:
            item_vectors = BlendedVectors(item_vectors, CaptionVectors(*caption_parts), blend)
        manifest = _next_manifest(retriever.manifest, new_index, model)
        state = _State(new_index, model, item_vectors, additions, caption_parts, manifest,
                       compact=compact)
        result = UpdateResult("add", update_version(manifest), list(items.ids), rows,
                              new_index.num_items, new_index.num_live,
                              list(new_index.level_sizes), grown=grown,
                              details={"origin": items.origin})
        _commit(retriever, state, result, save=save, started=started)
        return result


def delete_from(retriever: Any, ids: Sequence[str], *, save: bool = True) -> UpdateResult:
    """Delete items by id from a loaded retriever (and, with ``save``, its model dir)."""
    with retriever.update_lock:
        started = time.perf_counter()
        ids = list(ids)
        if not ids:
            raise UpdateError("no item ids to delete")
        live_ids = retriever.row_of_id()
        rows, seen = [], set()
        for item_id in ids:
            if not isinstance(item_id, str):
                raise UpdateError(f"item ids must be strings, got {item_id!r}")
            if item_id not in live_ids:
                raise UnknownItemError(f"unknown item id {item_id!r}: {retriever.path} has "
                                       f"no such item (or it was deleted)")
            if item_id not in seen:
                seen.add(item_id)
                rows.append(live_ids[item_id])
        index = retriever.index
        if len(rows) >= index.num_live:
            raise UpdateError(f"deleting {len(rows)} items would leave {retriever.path} with "
                              f"no items to retrieve")
        new_index = index.without_rows(np.asarray(rows, dtype=np.int64))
        manifest = _next_manifest(retriever.manifest, new_index, retriever.model)
        state = _State(new_index, retriever.model, retriever.item_vectors,
                       retriever.additions, None, manifest)
        result = UpdateResult("delete", update_version(manifest), sorted(seen, key=ids.index),
                              rows, new_index.num_items, new_index.num_live,
                              list(new_index.level_sizes))
        _commit(retriever, state, result, save=save, started=started)
        return result


def replace_weights(retriever: Any, model: Any, *, details: dict[str, Any],
                    save: bool = True) -> UpdateResult:
    """Swap in fine-tuned weights (``model``: the same architecture) as a new version
    (:func:`gcmr.train.finetune.finetune_items` calls this)."""
    with retriever.update_lock:
        started = time.perf_counter()
        if list(model.level_sizes) != list(retriever.index.level_sizes):
            raise ConfigError("the fine-tuned model's level sizes differ from the index's")
        manifest = _next_manifest(retriever.manifest, retriever.index, model)
        state = _State(retriever.index, model.eval(), retriever.item_vectors,
                       retriever.additions, None, manifest, model_changed=True)
        index = retriever.index
        result = UpdateResult("finetune", update_version(manifest), [], [], index.num_items,
                              index.num_live, list(index.level_sizes), details=details)
        _commit(retriever, state, result, save=save, started=started)
        return result


def _commit(retriever: Any, state: _State, result: UpdateResult, *, save: bool,
            started: float) -> None:
    entry = {"version": result.version, "op": result.op, "count": len(result.ids),
             "ids": result.ids[:LOG_IDS], "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "num_live": result.num_live, **result.details}
    if result.grown:
        entry["level_sizes"] = result.level_sizes
    state.manifest[UPDATES]["log"].append(entry)
    if save:
        write_update(retriever, state, model_changed=result.grown or state.model_changed)
        result.saved = True
    retriever.apply_update(index=state.index, model=state.model,
                           item_vectors=state.item_vectors, additions=state.additions,
                           manifest=state.manifest, caption_parts=state.caption_parts)
    result.seconds = time.perf_counter() - started


def _next_manifest(manifest: dict[str, Any], index: Any, model: Any) -> dict[str, Any]:
    from gcmr.model.io import index_fingerprint

    out = json.loads(json.dumps(manifest))
    info = out.setdefault(UPDATES, {"version": 0, "log": []})
    info.setdefault("base_index", manifest.get("index"))
    info["version"] = int(info.get("version", 0)) + 1
    info["index"] = INDEX_DIR
    out["index"] = {**out.get("index", {}), "level_sizes": list(index.level_sizes),
                    "num_items": index.num_items, "num_live": index.num_live,
                    "fingerprint": index_fingerprint(index)}
    out["model_config"] = model.config.to_dict()
    return out


def _compact_vectors(retriever: Any) -> Any:
    """The compact item vectors of the retriever's model (:mod:`gcmr.search.compact`): the
    ones it searches with, else the ones its manifest records (opened from its directory),
    else None."""
    from gcmr.search.compact import COMPACT_FIELD, CompactItemVectors, open_compact

    if isinstance(retriever.item_vectors, CompactItemVectors):
        return retriever.item_vectors
    if retriever.manifest.get(COMPACT_FIELD) is None:
        return None
    return open_compact(retriever.path, retriever.manifest, num_rows=retriever.index.num_items,
                        dim=int(retriever.model.config.query_dim))


def _base_parts(retriever: Any) -> list[Any]:
    """The training corpus's item embeddings (memory map), as the first part of the
    stacked item rows."""
    from gcmr.search.rerank import StackedRows

    items = getattr(retriever.item_vectors, "items", None)
    if isinstance(items, StackedRows):
        return [items.parts[0]]
    if items is not None:
        return [items]
    from gcmr.search.rerank import open_item_embeddings

    return [open_item_embeddings(retriever.corpus_path)]


@torch.no_grad()
def _extended_captions(retriever: Any, model: Any, items: NewItems
                       ) -> tuple[Any, np.ndarray] | None:
    """The caption vectors with the new items' appended (a pretrained query encoder's
    sentence vectors of their captions), or None when the model keeps none."""
    parts = retriever.caption_parts()
    if parts is None:
        return None
    from gcmr.search.rerank import StackedRows

    vectors, offsets = parts
    texts = [c for caps in items.captions for c in caps]
    counts = [len(caps) for caps in items.captions]
    new = np.zeros((len(texts), vectors.shape[1]), dtype=np.float16)
    was_training = model.training
    model.eval()
    for start in range(0, len(texts), 256):
        ids, mask = retriever.tokenizer.encode_batch(texts[start:start + 256])
        enc = model.encode(ids.to(retriever.device), mask.to(retriever.device))
        new[start:start + len(ids)] = model.text_vectors(enc).float().cpu().numpy()
    model.train(was_training)
    old = vectors.parts if isinstance(vectors, StackedRows) else [vectors]
    offsets = np.concatenate([offsets, offsets[-1] + np.cumsum(counts)]).astype(np.int64)
    return StackedRows(old + [new]), offsets


def grow_model(model: Any, level_sizes: list[int]) -> Any:
    """A copy of a from-scratch generative model whose last (unique-counter) level has
    ``level_sizes[-1]`` codes: the output rows (and tied code embeddings) of the new
    counter values start as copies of the last existing counter's, the rarest (so the new
    values begin with its low prior). The last level's rows are the end of the identifier
    vocabulary, so no other token moves."""
    from gcmr.model import GenerativeRetrievalModel

    old_sizes = list(model.config.level_sizes)
    if not isinstance(model, GenerativeRetrievalModel):
        raise UpdateError(f"the new items need unique counters up to {level_sizes[-1] - 1}, "
                          f"more than this model's {old_sizes[-1]} counter tokens, and only "
                          f"from-scratch generative models can grow them (not a "
                          f"{type(model).__name__})")
    if old_sizes[:-1] != list(level_sizes[:-1]) or level_sizes[-1] < old_sizes[-1]:
        raise UpdateError(f"cannot grow level sizes {old_sizes} to {list(level_sizes)}")
    extra = level_sizes[-1] - old_sizes[-1]
    state = model.state_dict()
    total = sum(old_sizes)  # rows of the output layer; code_embedding has 1 + total

    def grown(tensor: torch.Tensor, last_row: int) -> torch.Tensor:
        return torch.cat([tensor, tensor[last_row:last_row + 1].repeat(
            extra, *[1] * (tensor.ndim - 1))])

    state["code_embedding.weight"] = grown(state["code_embedding.weight"], total)
    state["output_bias"] = grown(state["output_bias"], total - 1)
    if "output.weight" in state:
        state["output.weight"] = grown(state["output.weight"], total - 1)
    if "code_vectors" in state:  # ModelConfig.code_vectors: one item-space vector per code
        state["code_vectors"] = grown(state["code_vectors"], total - 1)
    new = GenerativeRetrievalModel(model.config.replace(level_sizes=list(level_sizes)))
    new.load_state_dict(state)
    device = next(model.parameters()).device
    return new.to(device).train(model.training)


# ----------------------------------------------------------------------------- on disk


@contextlib.contextmanager
def update_lock(model_dir: Path) -> Iterator[None]:
    """Serialize writers of one model directory across processes: an exclusive ``flock``
    on ``.<name>.update.lock`` beside it (no locking where ``fcntl`` is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    model_dir = Path(model_dir)
    lock = model_dir.parent / f".{model_dir.name}.update.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def link_tree(src: Path, dst: Path, *, skip: set[str]) -> None:
    """Fill the next version ``dst`` of a model directory with ``src``'s entries (hard links
    where possible), except the names in ``skip`` (rewritten by the caller) and hidden files."""
    for entry in src.iterdir():
        if entry.name in skip or entry.name.startswith(".") and entry.is_file():
            continue
        if entry.is_dir():
            shutil.copytree(entry, dst / entry.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dst / entry.name)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_update(retriever: Any, state: _State, *, model_changed: bool) -> None:
    """Replace the retriever's model directory with one holding ``state`` (atomic)."""
    from gcmr.model.io import (
        CAPTION_OFFSETS,
        CAPTION_VECTORS,
        ITEM_CODES,
        WEIGHTS,
        read_generative_manifest,
        save_weights,
        write_model_manifest,
    )

    model_dir = Path(retriever.path)
    fresh = {ADDITIONS_DIR, INDEX_DIR, MANIFEST}
    if model_changed:
        fresh.add(state.manifest.get("weights", WEIGHTS))
    if state.caption_parts is not None:
        fresh |= {CAPTION_VECTORS, CAPTION_OFFSETS}
    if state.compact is not None:
        fresh.add(ITEM_CODES)
    with update_lock(model_dir):
        on_disk = update_version(read_generative_manifest(model_dir))
        if on_disk != update_version(retriever.manifest):
            raise ArtifactError(f"{model_dir} changed since it was loaded (update version "
                                f"{on_disk}, loaded {update_version(retriever.manifest)}); "
                                f"reload it and apply the update again")
        with atomic_dir(model_dir, overwrite=True) as tmp:
            link_tree(model_dir, tmp, skip=fresh)
            manifest = dict(state.manifest)
            info = manifest[UPDATES]
            # the index and the additions are artifacts of their own, written atomically in a
            # staging folder (the temporary directory itself is locked by atomic_dir, which
            # a nested atomic write in it would wait on), then moved in
            stage = tmp / ".stage"
            stage.mkdir()
            if len(state.additions):
                info["additions"] = ADDITIONS_DIR
                info["additions_fingerprint"] = state.additions.write(
                    stage / ADDITIONS_DIR, dtype=_base_dtype(retriever),
                    base_meta=_base_meta(retriever))
                os.replace(stage / ADDITIONS_DIR, tmp / ADDITIONS_DIR)
            else:
                info["additions"] = None
            index = state.index
            index.corpus_fingerprint = _combined_fingerprint(
                retriever.corpus_fingerprint, info.get("additions_fingerprint"))
            index.save(stage / INDEX_DIR)
            os.replace(stage / INDEX_DIR, tmp / INDEX_DIR)
            shutil.rmtree(stage)
            from gcmr.model.io import index_fingerprint

            manifest["index"] = {**manifest["index"],
                                 "path": str((model_dir / INDEX_DIR).resolve()),
                                 "fingerprint": index_fingerprint(index)}
            if model_changed:
                save_weights(tmp / manifest.get("weights", WEIGHTS), state.model.state_dict())
            if state.caption_parts is not None:
                _write_caption_vectors(tmp, *state.caption_parts)
            if state.compact is not None:
                from gcmr.search.compact import COMPACT_FIELD, write_codes

                write_codes(tmp / ITEM_CODES, state.compact.codes)
                manifest[COMPACT_FIELD] = {**manifest[COMPACT_FIELD],
                                           "rows": len(state.compact)}
            fields = {k: v for k, v in manifest.items()
                      if k not in ("format", "version", "library_versions", "sha256")}
            written = write_model_manifest(tmp, dense=False, extra_checksums=ADDITION_FILES,
                                           **fields)
            state.manifest = written


def _combined_fingerprint(base: str, additions: str | None) -> str:
    """The fingerprint an updated index records: the training corpus's, and the added
    items' when there are any (so ``gcmr train`` refuses it for either corpus alone)."""
    if not additions:
        return base
    import hashlib

    return hashlib.sha256(f"{base}+{additions}".encode()).hexdigest()[:32]


def _write_caption_vectors(tmp: Path, vectors: Any, offsets: np.ndarray) -> None:
    from gcmr.model.io import CAPTION_OFFSETS, CAPTION_VECTORS

    out = np.lib.format.open_memmap(tmp / CAPTION_VECTORS, mode="w+", dtype=np.float16,
                                    shape=tuple(vectors.shape))
    for a in range(0, len(vectors), CHUNK):
        out[a:a + CHUNK] = np.asarray(vectors[np.arange(a, min(a + CHUNK, len(vectors)))],
                                      dtype=np.float16)
    out.flush()
    del out
    np.save(tmp / CAPTION_OFFSETS, np.asarray(offsets, dtype=np.int64), allow_pickle=False)


def _base_dtype(retriever: Any) -> Any:
    """The dtype the additions are stored in: the training corpus's (float32 when a model
    that scores compact item vectors is used without its corpus)."""
    from gcmr.search.compact import CompactItemVectors

    try:
        parts = _base_parts(retriever)
    except CorpusError:
        if not isinstance(retriever.item_vectors, CompactItemVectors):
            raise
        return np.float32
    dtype = np.dtype(parts[0].dtype)
    return dtype if dtype in (np.dtype("float16"), np.dtype("float32")) else np.float32


def _base_meta(retriever: Any) -> Any:
    path = Path(retriever.corpus_path) / "corpus.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    from types import SimpleNamespace

    return SimpleNamespace(name=str(data.get("name", "corpus")),
                           modality=data.get("modality", "other")
                           if data.get("modality") in ("image", "audio", "video", "other")
                           else "other",
                           embedding_model=str(data.get("embedding_model", "unknown")))


# ----------------------------------------------------------------------------- by directory


def _load(model_dir: str | Path, corpus_path: str | Path | None, verify: bool,
          device: str = "cpu") -> Any:
    from gcmr.search.retriever import Retriever

    return Retriever.load(model_dir, corpus_path=corpus_path, verify=verify, device=device)


def add_items(model_dir: str | Path, source: str | Path | NewItems, *,
              embeddings: str | Path | None = None, corpus_path: str | Path | None = None,
              verify: bool = True, device: str = "cpu",
              show_progress: bool = False) -> UpdateResult:
    """Add the items of ``source`` (a corpus directory, an ``items.jsonl`` with its
    embeddings ``.npy``, or :class:`NewItems`) to the model directory ``model_dir``, which is
    replaced atomically by its next version. See the module docstring."""
    items = source if isinstance(source, NewItems) else NewItems.read(source,
                                                                      embeddings=embeddings)
    retriever = _load(model_dir, corpus_path, verify, device)
    return add_to(retriever, items, save=True, show_progress=show_progress)


def delete_items(model_dir: str | Path, ids: Sequence[str], *,
                 corpus_path: str | Path | None = None, verify: bool = True) -> UpdateResult:
    """Delete the items ``ids`` from the model directory ``model_dir`` (atomic, versioned);
    an unknown id is an :class:`UpdateError` naming it and nothing changes."""
    retriever = _load(model_dir, corpus_path, verify)
    return delete_from(retriever, ids, save=True)


__all__ = ["Additions", "NewItems", "UpdateError", "UpdateResult", "add_items", "add_to",
           "delete_from", "delete_items", "grow_model", "replace_weights", "update_version"]
