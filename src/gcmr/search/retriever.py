"""The public search API: ``Retriever.load(model_dir).search(queries, k) -> (scores, item_ids)``.

Shaped like faiss: a batch of queries in, arrays out. Scores are sequence log-probabilities of
the generated identifiers (higher is better); ``item_ids`` is an object array of corpus ids,
``""`` where fewer than ``k`` valid identifiers exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcmr.corpus import check_corpus_fingerprint
from gcmr.errors import ArtifactError, ConfigError, GcmrError
from gcmr.ids.trie import Trie
from gcmr.search.base import check_search_args, item_descriptions, rows_to_ids
from gcmr.search.beam import effective_beam
from gcmr.search.rerank import (
    CaptionVectors,
    ItemVectors,
    PrefixExpander,
    RerankConfig,
    expander_for,
    fuse,
    open_item_embeddings,
    rank,
)


@torch.no_grad()
def search_candidates(model, tokenizer, trie: Trie, texts: Sequence[str], *, k: int,
                      beam: int | None, device: torch.device | str = "cpu",
                      batch_size: int = 256, row_map: np.ndarray | None = None,
                      item_vectors: ItemVectors | CaptionVectors | None = None,
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
                item_vectors: ItemVectors | CaptionVectors | None = None,
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
                 device: torch.device, item_vectors: ItemVectors | CaptionVectors | None = None,
                 rerank: RerankConfig | None = None,
                 corpus_path: str | Path | None = None) -> None:
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
        self._subtries: dict[bytes, tuple[Trie, np.ndarray]] = {}
        self._expander_cache: PrefixExpander | None = None

    @classmethod
    def load(cls, model_dir: str | Path, *, index_path: str | Path | None = None,
             device: str = "auto", rerank: str | None = None,
             corpus_path: str | Path | None = None, verify: bool = True) -> Retriever:
        """Load a model directory and the index it was trained on (path from the manifest).
        ``verify`` checks the recorded sha256 of the model's and the index's files.

        A model trained with a query-vector head searches in hybrid mode by default, with the
        fusion weight saved at training time; it memory-maps the corpus's embeddings
        (``corpus_path``, default the manifest's) to score candidates. ``rerank="none"`` is
        pure generation and needs no corpus.
        """
        from gcmr.ids import load_index
        from gcmr.model.io import index_fingerprint, load_generative, read_generative_manifest
        from gcmr.runtime import resolve_device

        model_dir = Path(model_dir)
        manifest = read_generative_manifest(model_dir)
        index_path = Path(index_path or manifest["index"]["path"])
        index = load_index(index_path, verify=verify)
        if index_fingerprint(index) != manifest["index"]["fingerprint"]:
            raise ArtifactError(f"{model_dir} was trained on a different index than {index_path} "
                                f"(identifiers differ); pass the right --index")
        model, tokenizer, manifest = load_generative(model_dir, manifest, verify=verify)
        saved = {key: value for key, value in (manifest.get("rerank") or {}).items()
                 if key in ("mode", "logprob_weight", "candidates", "expand_depth",
                            "max_candidates", "item_vectors")}  # the rest: how they were chosen
        if rerank is not None:
            saved["mode"] = rerank
        has_head = bool(getattr(model, "has_query_head", False))
        saved.setdefault("mode", "hybrid" if has_head else "none")
        config = RerankConfig.from_dict(saved, where=f"{model_dir}: rerank")
        item_vectors: ItemVectors | CaptionVectors | None = None
        if config.mode == "hybrid" and config.item_vectors == "captions":
            if not model.config.pretrained:
                raise ArtifactError(f"{model_dir}: rerank item_vectors = captions needs a "
                                    f"pretrained query encoder, this model has none")
            item_vectors = CaptionVectors.open(model_dir, index.num_items)
        elif config.mode == "hybrid":
            if not has_head:
                raise ConfigError(f"{model_dir}: hybrid search needs a model trained with a "
                                  f"query-vector head (gcmr train --dense-weight > 0); use "
                                  f"--rerank none")
            corpus = Path(corpus_path or manifest["corpus"]["path"])
            items = open_item_embeddings(corpus)
            expected = (index.num_items, model.config.query_dim)
            if tuple(items.shape) != expected:
                raise ArtifactError(f"{corpus / 'embeddings.npy'} is {list(items.shape)}, the "
                                    f"model scores [{expected[0]}, {expected[1]}] item vectors; "
                                    f"is this the right corpus?")
            check_corpus_fingerprint(corpus, manifest["corpus"].get("fingerprint"),
                                     artifact=model_dir)
            item_vectors = ItemVectors(items)
        dev = resolve_device(device)
        return cls(model.to(dev), tokenizer, index, manifest, path=model_dir, device=dev,
                   item_vectors=item_vectors, rerank=config, corpus_path=corpus_path)

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
        """``row -> first caption or source`` for display (empty when the corpus is gone)."""
        check_corpus_fingerprint(self.corpus_path, self.corpus_fingerprint, artifact=self.path)
        return item_descriptions(self.corpus_path)

    def search_rows(self, queries: Sequence[str], *, k: int = 10, beam: int | None = None,
                    candidates: np.ndarray | None = None, batch_size: int = 256,
                    rerank: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search` but returns item rows (-1 padding). ``candidates`` restricts
        the pool to those rows (a sub-trie is built once and cached)."""
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
            self._expander_cache = expander_for(self.index.codes, self.index.level_sizes,
                                                self.rerank)
        return self._expander_cache if depth else None

    def search(self, queries: str | Sequence[str], *, k: int = 10, beam: int | None = None,
               candidates: np.ndarray | None = None,
               rerank: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for each query: ``(scores [Q, k], item_ids [Q, k])``.

        ``beam`` follows :func:`~gcmr.search.beam.effective_beam` (default max(10, k)).
        Scores are summed token log-probabilities (pure generation) or the fused hybrid
        scores (``rerank``: the model's saved mode by default, ``"none"`` / ``"hybrid"``).
        """
        queries = check_search_args(queries, k=k, beam=beam, candidates=candidates,
                                    num_items=self.index.num_items)
        if isinstance(queries, str):
            queries = [queries]
        scores, rows = self.search_rows(queries, k=k, beam=beam, candidates=candidates,
                                        rerank=rerank)
        return scores, rows_to_ids(self.index.item_ids, rows)

    def _subtrie(self, rows: np.ndarray) -> tuple[Trie, np.ndarray]:
        rows = np.unique(rows)
        key = rows.tobytes()
        if key not in self._subtries:
            if len(rows) and (rows.min() < 0 or rows.max() >= self.index.num_items):
                raise GcmrError("candidate rows fall outside the index")
            trie = Trie.build(self.index.codes[rows], list(self.index.level_sizes))
            self._subtries = {key: (trie, rows)}  # keep one: candidate pools are per split
        return self._subtries[key]
