"""The public search API: ``Retriever.load(model_dir).search(queries, k) -> (scores, item_ids)``.

Shaped like faiss: a batch of queries in, arrays out. Scores are sequence log-probabilities of
the generated identifiers (higher is better); ``item_ids`` is an object array of corpus ids,
``""`` where fewer than ``k`` valid identifiers exist.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcmr.corpus import check_corpus_fingerprint
from gcmr.errors import ArtifactError, ConfigError, GcmrError
from gcmr.ids.trie import Trie
from gcmr.search.base import check_search_args, item_descriptions, rows_to_ids
from gcmr.search.beam import effective_beam
from gcmr.search.compact import CompactItemVectors
from gcmr.search.example import (
    EXAMPLE_WEIGHT,
    PrefixNeighbours,
    check_examples,
    rank_example,
    unit_rows,
)
from gcmr.search.rerank import (
    BlendedVectors,
    CaptionVectors,
    ItemVectors,
    PrefixExpander,
    RerankConfig,
    StackedRows,
    expander_for,
    fuse,
    open_item_embeddings,
    rank,
)
from gcmr.search.updates import Additions, NewItems, UpdateResult

# what a hybrid search scores its candidates with (each has ``query`` and ``cosines``)
ItemScorer = ItemVectors | CompactItemVectors | CaptionVectors | BlendedVectors


@torch.no_grad()
def search_candidates(model, tokenizer, trie: Trie, texts: Sequence[str], *, k: int,
                      beam: int | None, device: torch.device | str = "cpu",
                      batch_size: int = 256, row_map: np.ndarray | None = None,
                      item_vectors: ItemScorer | None = None,
                      expander: PrefixExpander | None = None, max_candidates: int = 100
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Constrained beam search for a list of texts in batches: the ``k`` best identifiers of
    each query as ``(logprobs float32 [Q, k], rows int64 [Q, k], cosines)``, -inf / -1
    padding. With ``item_vectors`` (hybrid search), ``cosines`` [Q, k] are the candidates'
    cosines to the model's query vectors from the same encoder pass; else ``None``.

    ``row_map`` translates the trie's item rows (e.g. of a candidate sub-trie) to corpus rows.
    ``beam`` follows :func:`~gcmr.search.beam.effective_beam` (``None`` = max(10, k)).
    With an ``expander`` (hybrid search over the whole index), each list grows to
    ``max(max_candidates, k)`` with the items under the beam's prefixes
    (:class:`~gcmr.search.rerank.PrefixExpander`).
    """
    from gcmr.search.beam import constrained_beam_search

    beam = effective_beam(beam, k)
    if expander is not None and (item_vectors is None or row_map is not None):
        raise ConfigError("candidate expansion needs the item vectors and the whole index")
    out_w = max(max_candidates, k) if expander is not None else k
    scores_out = np.full((len(texts), out_w), -np.inf, dtype=np.float32)
    rows_out = np.full((len(texts), out_w), -1, dtype=np.int64)
    cos_out = np.full((len(texts), out_w), -np.inf, dtype=np.float32) if item_vectors else None
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        try:
            ids, mask = tokenizer.encode_batch(chunk)
        except GcmrError as exc:
            raise GcmrError(f"query batch starting at query {start}: {exc}") from exc
        ids, mask = ids.to(device), mask.to(device)
        enc = model.encode(ids, mask)
        scores, rows, _ = constrained_beam_search(model, ids, mask, trie, beam=beam, k=k,
                                                  enc=enc)
        width = min(k, rows.shape[1])
        s = scores[:, :width].float().cpu().numpy()
        r = rows[:, :width].cpu().numpy()
        if row_map is not None:
            r = np.where(r >= 0, row_map[np.maximum(r, 0)], -1)
        if expander is not None:
            r, s = expander.expand(r, s, max_candidates)
            width = r.shape[1]
        stop = start + len(chunk)
        scores_out[start:stop, :width] = s
        rows_out[start:stop, :width] = r
        if cos_out is not None:
            queries = item_vectors.query(model, enc)
            cos_out[start:stop, :width] = item_vectors.cosines(queries, r)
    return scores_out, rows_out, cos_out


def search_rows(model, tokenizer, trie: Trie, texts: Sequence[str], *, k: int, beam: int | None,
                device: torch.device | str = "cpu", batch_size: int = 256,
                row_map: np.ndarray | None = None,
                item_vectors: ItemScorer | None = None,
                logprob_weight: float = 0.0, expander: PrefixExpander | None = None,
                max_candidates: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Ranked ``(scores float32 [Q, k], rows int64 [Q, k])``, -inf / -1 padding.

    Pure generation (``item_vectors`` None): the beam's identifiers by sequence
    log-probability. Hybrid: every identifier the beam keeps (the beam width, at least ``k``)
    is a candidate, reranked by ``cosine + logprob_weight * logprob``
    (:mod:`gcmr.search.rerank`); scores are the fused scores.
    """
    if item_vectors is None:
        scores, rows, _ = search_candidates(model, tokenizer, trie, texts, k=k, beam=beam,
                                            device=device, batch_size=batch_size,
                                            row_map=row_map)
        return scores, rows
    width = effective_beam(beam, k)
    logp, rows, cos = search_candidates(model, tokenizer, trie, texts, k=width, beam=width,
                                        device=device, batch_size=batch_size, row_map=row_map,
                                        item_vectors=item_vectors, expander=expander,
                                        max_candidates=max_candidates)
    return rank(fuse(cos, logp, logprob_weight), rows, k)


class Retriever:
    """A trained generative retriever: tokenizer + seq2seq model + identifier index, and for
    a model with a query-vector head the item vectors its hybrid search reranks with."""

    def __init__(self, model, tokenizer, index, manifest: dict[str, Any], *, path: Path,
                 device: torch.device, item_vectors: ItemScorer | None = None,
                 rerank: RerankConfig | None = None,
                 corpus_path: str | Path | None = None,
                 additions: Additions | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.index = index
        self.manifest = manifest
        self.path = path
        self.device = device
        self.item_vectors = item_vectors
        self._corpus_path = Path(corpus_path) if corpus_path is not None else None
        if rerank is None:
            rerank = RerankConfig(mode="hybrid" if item_vectors is not None else "none")
        self.rerank = rerank
        # items added since training (rows after the training corpus's; gcmr.search.updates)
        self.additions = additions if additions is not None else Additions()
        # held by every live update (add, delete, fine-tune) of this retriever
        self.update_lock = threading.RLock()
        self._base_descriptions: Callable[[int], str] | None = None  # kept across updates
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._subtries: dict[bytes, tuple[Trie, np.ndarray]] = {}
        self._expander_cache: PrefixExpander | None = None
        self._row_of_id: dict[str, int] | None = None
        self._neighbours: PrefixNeighbours | None = None
        self._items: Any = None
        self._caption_parts: tuple[Any, np.ndarray] | None = None

    @classmethod
    def load(cls, model_dir: str | Path, *, index_path: str | Path | None = None,
             device: str = "auto", rerank: str | None = None,
             corpus_path: str | Path | None = None, verify: bool = True) -> Retriever:
        """Load a model directory and the index it was trained on (path from the manifest).
        ``verify`` checks the recorded sha256 of the model's and the index's files.

        A model trained with a query-vector head searches in hybrid mode by default, with the
        fusion weight saved at training time; it memory-maps the corpus's embeddings
        (``corpus_path``, default the manifest's) to score candidates, or the compact item
        vectors of the model directory when the manifest says so (``gcmr compress-vectors``;
        no corpus needed). ``rerank="none"`` is pure generation and needs no corpus.
        """
        from gcmr.ids import load_index
        from gcmr.model.io import index_fingerprint, load_generative, read_generative_manifest
        from gcmr.runtime import resolve_device

        model_dir = Path(model_dir)
        manifest = read_generative_manifest(model_dir)
        updated = (manifest.get("updates") or {}).get("index")
        if index_path is None and updated:  # live updates keep the index in the model dir
            index_path = model_dir / updated
        index_path = Path(index_path or manifest["index"]["path"])
        index = load_index(index_path, verify=verify)
        if index_fingerprint(index) != manifest["index"]["fingerprint"]:
            raise ArtifactError(f"{model_dir} was trained on a different index than {index_path} "
                                f"(identifiers differ); pass the right --index")
        model, tokenizer, manifest = load_generative(model_dir, manifest, verify=verify)
        additions = Additions.open(model_dir, manifest)
        saved = {key: value for key, value in (manifest.get("rerank") or {}).items()
                 if key in ("mode", "logprob_weight", "candidates", "expand_depth",
                            "max_candidates", "item_vectors", "text_weight")}
        # (the rest of the record: how they were chosen)
        if rerank is not None:
            saved["mode"] = rerank
        has_head = bool(getattr(model, "has_query_head", False))
        saved.setdefault("mode", "hybrid" if has_head else "none")
        config = RerankConfig.from_dict(saved, where=f"{model_dir}: rerank")
        item_vectors: ItemScorer | None = None
        if config.mode == "hybrid" and config.item_vectors in ("captions", "blend") \
                and not model.config.pretrained:
            raise ArtifactError(f"{model_dir}: rerank item_vectors = {config.item_vectors} "
                                f"needs a pretrained query encoder, this model has none")
        if config.mode == "hybrid" and config.item_vectors == "captions":
            item_vectors = CaptionVectors.open(model_dir, index.num_items)
        elif config.mode == "hybrid" and not has_head:
            raise ConfigError(f"{model_dir}: hybrid search needs a model trained with a "
                              f"query-vector head (gcmr train --dense-weight > 0); use "
                              f"--rerank none")
        elif config.mode == "hybrid" and config.item_vectors == "compact":
            from gcmr.search.compact import open_compact

            item_vectors = open_compact(model_dir, manifest, num_rows=index.num_items,
                                        dim=model.config.query_dim)
        elif config.mode == "hybrid":
            corpus = Path(corpus_path or manifest["corpus"]["path"])
            items = open_item_embeddings(corpus)
            expected = (index.num_items - len(additions), model.config.query_dim)
            if tuple(items.shape) != expected:
                raise ArtifactError(f"{corpus / 'embeddings.npy'} is {list(items.shape)}, the "
                                    f"model scores [{expected[0]}, {expected[1]}] item vectors; "
                                    f"is this the right corpus?")
            check_corpus_fingerprint(corpus, manifest["corpus"].get("fingerprint"),
                                     artifact=model_dir)
            item_vectors = ItemVectors(StackedRows([items, *additions.parts])
                                       if len(additions) else items)
            if config.item_vectors == "blend":
                item_vectors = BlendedVectors(item_vectors,
                                              CaptionVectors.open(model_dir, index.num_items),
                                              config.text_weight)
        dev = resolve_device(device)
        return cls(model.to(dev), tokenizer, index, manifest, path=model_dir, device=dev,
                   item_vectors=item_vectors, rerank=config, corpus_path=corpus_path,
                   additions=additions)

    @property
    def item_ids(self) -> list[str]:
        return self.index.item_ids

    @property
    def corpus_path(self) -> Path:
        """Where the corpus is: the path given at load time, else the manifest's."""
        if self._corpus_path is not None:
            return self._corpus_path
        return Path(self.manifest["corpus"]["path"])

    @property
    def corpus_fingerprint(self) -> str:
        return self.manifest["corpus"]["fingerprint"]

    def item_descriptions(self):
        """``row -> first caption or source`` for display (empty when the corpus is gone);
        added items' come from the model's additions. The corpus part is read once per
        retriever (a live update builds only the additions' part again)."""
        base = self._base_descriptions
        if base is None:  # the training corpus never changes under a model: read it once
            check_corpus_fingerprint(self.corpus_path, self.corpus_fingerprint,
                                     artifact=self.path)
            base = self._base_descriptions = item_descriptions(self.corpus_path)
        if not len(self.additions):
            return base
        first = self.index.num_items - len(self.additions)
        added = [caps[0] if caps else str(src or "")
                 for caps, src in zip(self.additions.captions, self.additions.sources)]
        return lambda row: added[row - first] if first <= row < first + len(added) else \
            base(row)

    # ------------------------------------------------------------------ live updates

    def add_items(self, items: NewItems | str | Path, *, save: bool = True,
                  embeddings: str | Path | None = None) -> UpdateResult:
        """Add items (:class:`~gcmr.search.updates.NewItems`, a corpus directory, or an
        ``items.jsonl`` with its ``.npy``): retrievable at once; with ``save`` the model
        directory is replaced atomically by the next version (else only this retriever
        changes). See :mod:`gcmr.search.updates`."""
        from gcmr.search.updates import add_to

        if not isinstance(items, NewItems):
            items = NewItems.read(items, embeddings=embeddings)
        return add_to(self, items, save=save)

    def delete_items(self, ids: str | Sequence[str], *, save: bool = True) -> UpdateResult:
        """Delete items by id: no search returns them from now on (``save``: atomically in
        the model directory too)."""
        from gcmr.search.updates import delete_from

        return delete_from(self, [ids] if isinstance(ids, str) else list(ids), save=save)

    def apply_update(self, *, index, model, item_vectors, additions: Additions,
                     manifest: dict[str, Any],
                     caption_parts: tuple[Any, np.ndarray] | None = None) -> None:
        """Swap in an updated state (built aside by :mod:`gcmr.search.updates`)."""
        with self.update_lock:
            self.index, self.model = index, model.eval()
            self.item_vectors, self.additions, self.manifest = item_vectors, additions, manifest
            self._reset_caches()
            self._caption_parts = caption_parts

    def row_of_id(self) -> dict[str, int]:
        """Item id -> row of every live (not deleted) item."""
        if self._row_of_id is None:
            ids = self.index.item_ids
            self._row_of_id = {ids[int(r)]: int(r) for r in self.index.live_rows()}
        return self._row_of_id

    def caption_parts(self) -> tuple[Any, np.ndarray] | None:
        """The caption vectors and offsets the model keeps (pretrained query encoders), or
        None."""
        if isinstance(self.item_vectors, (CaptionVectors, BlendedVectors)):
            return self.item_vectors.vectors, self.item_vectors.offsets
        if self._caption_parts is None:
            from gcmr.model.io import CAPTION_VECTORS

            if (Path(self.path) / CAPTION_VECTORS).is_file():
                vectors = CaptionVectors.open(self.path, self.index.num_items)
                self._caption_parts = (vectors.vectors, vectors.offsets)
        return self._caption_parts

    def search_rows(self, queries: Sequence[str] | None, *, k: int = 10,
                    beam: int | None = None, candidates: np.ndarray | None = None,
                    batch_size: int = 256, rerank: str | None = None, like: Any = None,
                    vector: Any = None, example_weight: float = EXAMPLE_WEIGHT
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search` but returns item rows (-1 padding). ``candidates`` restricts
        the pool to those rows (a sub-trie is built once and cached)."""
        if like is not None or vector is not None:
            return self._example_rows(queries, like=like, vector=vector, k=k, beam=beam,
                                      candidates=candidates, batch_size=batch_size,
                                      rerank=rerank, weight=example_weight)
        queries = check_search_args(queries, k=k, beam=beam, candidates=candidates,
                                    num_items=self.index.num_items, batch_size=batch_size)
        trie, row_map = self.index.trie, None
        if candidates is not None:
            trie, row_map = self._subtrie(np.asarray(candidates, dtype=np.int64))
        mode = RerankConfig(mode=rerank).mode if rerank is not None else self.rerank.mode
        if mode == "hybrid" and self.item_vectors is None:
            raise ConfigError("hybrid search needs the model's query-vector head and the item "
                              "vectors; this retriever has none (use rerank='none')")
        if mode == "hybrid" and beam is None:
            beam = self.rerank.candidates  # the hybrid default: a wider candidate list
        expander = self._expander() if mode == "hybrid" and row_map is None else None
        return search_rows(self.model, self.tokenizer, trie, list(queries), k=k, beam=beam,
                           device=self.device, batch_size=batch_size, row_map=row_map,
                           item_vectors=self.item_vectors if mode == "hybrid" else None,
                           logprob_weight=self.rerank.logprob_weight, expander=expander,
                           max_candidates=self.rerank.max_candidates)

    def _expander(self) -> PrefixExpander | None:
        """The prefix groups of ``rerank.expand_depth`` (built once), or None when off."""
        depth = self.rerank.expand_depth
        if depth and (self._expander_cache is None or self._expander_cache.depth != depth):
            live = self.index.live_rows() if len(self.index.deleted) else None
            self._expander_cache = expander_for(self.index.codes, self.index.level_sizes,
                                                self.rerank, rows=live)
        return self._expander_cache if depth else None

    def search(self, queries: str | Sequence[str] | None = None, *, k: int = 10,
               beam: int | None = None, candidates: np.ndarray | None = None,
               rerank: str | None = None, like: Any = None, vector: Any = None,
               example_weight: float = EXAMPLE_WEIGHT) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for each query: ``(scores [Q, k], item_ids [Q, k])``.

        ``beam`` follows :func:`~gcmr.search.beam.effective_beam` (default max(10, k)).
        Scores are summed token log-probabilities (pure generation) or the fused hybrid
        scores (``rerank``: the model's saved mode by default, ``"none"`` / ``"hybrid"``).

        Query by example (:mod:`gcmr.search.example`): ``like`` an item id (or a list of
        them, "more like this") or ``vector`` an item embedding [D] (or a batch [Q, D]);
        scores are cosines to the example. With text ``queries`` as well (one per example,
        or one example for every query), a mixed query: the text's hybrid candidates and
        the example's, ranked by ``(1 - example_weight) * cosine(query vector, item) +
        example_weight * cosine(example, item embedding)``.
        """
        if like is not None or vector is not None:
            if isinstance(queries, str):
                queries = [queries]
            scores, rows = self.search_rows(queries, k=k, beam=beam, candidates=candidates,
                                            rerank=rerank, like=like, vector=vector,
                                            example_weight=example_weight)
            return scores, rows_to_ids(self.index.item_ids, rows)
        queries = check_search_args(queries, k=k, beam=beam, candidates=candidates,
                                    num_items=self.index.num_items)
        if isinstance(queries, str):
            queries = [queries]
        scores, rows = self.search_rows(queries, k=k, beam=beam, candidates=candidates,
                                        rerank=rerank)
        return scores, rows_to_ids(self.index.item_ids, rows)

    # ------------------------------------------------------------------ query by example

    def item_matrix(self) -> Any:
        """Row-indexable item embeddings of every row (the corpus's memory map, then the
        additions), or None when the corpus is not available."""
        items = getattr(self.item_vectors, "items", None)
        if items is not None:
            return items
        if self._items is None:
            path = Path(self.corpus_path) / "embeddings.npy"
            if not path.is_file():
                return None
            base = open_item_embeddings(self.corpus_path)
            if len(base) != self.index.num_items - len(self.additions):
                raise ArtifactError(f"{path} has {len(base)} rows, the model's index "
                                    f"{self.index.num_items - len(self.additions)}; is this "
                                    f"the right corpus?")
            check_corpus_fingerprint(self.corpus_path, self.corpus_fingerprint,
                                     artifact=self.path)
            self._items = StackedRows([base, *self.additions.parts]) if len(self.additions) \
                else base
        return self._items

    def _examples(self, like: Any, vector: Any) -> tuple[np.ndarray | None, np.ndarray]:
        """``(example vectors [Q, D] or None, semantic codes [Q, L - 1])``."""
        if like is not None and vector is not None:
            raise ConfigError("pass either like (item ids) or vector (embeddings), not both")
        items = self.item_matrix()
        if like is not None:
            ids = [like] if isinstance(like, str) else list(like)
            if not ids:
                raise ConfigError("like is empty: pass one or more item ids")
            live = self.row_of_id()
            rows = []
            for i, item_id in enumerate(ids):
                if not isinstance(item_id, str) or item_id not in live:
                    raise ConfigError(f"like[{i}]: unknown item id {item_id!r} (not in "
                                      f"{self.path}, or deleted)")
                rows.append(live[item_id])
            rows = np.asarray(rows, dtype=np.int64)
            vectors = None if items is None else np.asarray(items[rows], dtype=np.float32)
            return vectors, self.index.codes[rows, :-1]
        from gcmr.search.updates import item_dim

        vectors = check_examples(vector, item_dim(self))
        if self.index.config.fit_view != "embeddings":
            raise ConfigError(f"the index was fitted on the {self.index.config.fit_view!r} "
                              f"view, which an item embedding alone does not give; search "
                              f"by an existing item with like=ID instead")
        return vectors, self.index.encode(vectors)

    def _example_rows(self, queries: Any, *, like: Any, vector: Any, k: int, beam: Any,
                      candidates: Any, batch_size: int, rerank: str | None,
                      weight: float) -> tuple[np.ndarray, np.ndarray]:
        from gcmr.search.base import MAX_K, check_int

        check_int("k", k, high=MAX_K)
        if candidates is not None:
            raise ConfigError("candidates does not apply to a query by example")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or \
                not 0.0 <= weight <= 1.0:
            raise ConfigError(f"example_weight must be a number in [0, 1], got {weight!r}")
        texts = [] if queries is None else check_search_args(queries, k=k, beam=beam,
                                                             batch_size=batch_size)
        vectors, semantic = self._examples(like, vector)
        if texts and len(semantic) not in (1, len(texts)):
            raise ConfigError(f"{len(texts)} text queries but {len(semantic)} examples: "
                              f"pass one example per query, or one for all")
        if texts and len(semantic) == 1 and len(texts) > 1:
            semantic = np.repeat(semantic, len(texts), axis=0)
            vectors = None if vectors is None else np.repeat(vectors, len(texts), axis=0)
        if self._neighbours is None:
            self._neighbours = PrefixNeighbours(self.index.codes, self.index.live_rows())
        items = self.item_matrix()
        cands = [self._neighbours.candidates(s, k=k, expand_depth=self.rerank.expand_depth,
                                             max_candidates=self.rerank.max_candidates)
                 for s in semantic]
        if not texts:
            out = [rank_example(c, d, None if vectors is None else vectors[i], items, k)
                   for i, (c, d) in enumerate(cands)]
            return (np.stack([o[0] for o in out]).astype(np.float32),
                    np.stack([o[1] for o in out]).astype(np.int64))
        return self._mixed_rows(texts, vectors, cands, items, k=k, beam=beam,
                                batch_size=batch_size, rerank=rerank, weight=weight)

    @torch.no_grad()
    def _mixed_rows(self, texts: list[str], vectors: np.ndarray | None, cands: list,
                    items: Any, *, k: int, beam: Any, batch_size: int, rerank: str | None,
                    weight: float) -> tuple[np.ndarray, np.ndarray]:
        """A text + example query: the union of the text's hybrid candidates and the
        example's, ranked by ``(1 - weight) * text cosine + weight * example cosine``."""
        mode = RerankConfig(mode=rerank).mode if rerank is not None else self.rerank.mode
        if mode != "hybrid" or self.item_vectors is None or items is None or vectors is None:
            raise ConfigError("a text + example query ranks by the query vector and the item "
                              "embeddings: it needs hybrid search (a model trained with a "
                              "query-vector head) and the corpus's embeddings")
        width = effective_beam(self.rerank.candidates if beam is None else beam, k)
        _, text_rows, _ = search_candidates(
            self.model, self.tokenizer, self.index.trie, texts, k=width, beam=width,
            device=self.device, batch_size=batch_size, item_vectors=self.item_vectors,
            expander=self._expander(), max_candidates=self.rerank.max_candidates)
        union = [np.unique(np.concatenate([t[t >= 0], c])) for t, (c, _) in
                 zip(text_rows, cands)]
        rows = np.full((len(texts), max(len(u) for u in union)), -1, dtype=np.int64)
        for i, u in enumerate(union):
            rows[i, :len(u)] = u
        text_cos = np.full(rows.shape, -np.inf, dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            ids, mask = self.tokenizer.encode_batch(texts[start:start + batch_size])
            enc = self.model.encode(ids.to(self.device), mask.to(self.device))
            stop = start + ids.shape[0]
            text_cos[start:stop] = self.item_vectors.cosines(
                self.item_vectors.query(self.model, enc), rows[start:stop])
        example_cos = np.full(rows.shape, -np.inf, dtype=np.float32)
        for i, u in enumerate(union):
            example_cos[i, :len(u)] = unit_rows(items[u]) @ unit_rows(vectors[i])
        with np.errstate(invalid="ignore"):
            fused = (1.0 - weight) * text_cos + weight * example_cos
        fused[rows < 0] = -np.inf
        return rank(fused.astype(np.float32), rows, k)

    def _subtrie(self, rows: np.ndarray) -> tuple[Trie, np.ndarray]:
        rows = np.unique(rows)
        if len(self.index.deleted):
            rows = np.setdiff1d(rows, self.index.deleted)
        key = rows.tobytes()
        if key not in self._subtries:
            if len(rows) and (rows.min() < 0 or rows.max() >= self.index.num_items):
                raise GcmrError("candidate rows fall outside the index")
            trie = Trie.build(self.index.codes[rows], list(self.index.level_sizes))
            self._subtries = {key: (trie, rows)}  # keep one: candidate pools are per split
        return self._subtries[key]
