"""Hybrid search: generation proposes, the query vector decides.

Constrained beam search returns a short candidate list (the beam's identifiers, each one item);
the generative model's query-vector head (:meth:`GenerativeRetrievalModel.query_vectors`, from
the same encoder pass) scores each candidate by the cosine between the query vector and the
item's embedding, and the list is reordered by the fused score

    ``score = cosine(q, item) + logprob_weight * log p(identifier | query)``.

The two terms live on very different scales (a cosine in [-1, 1], a sequence log-probability
of a few nats), so ``logprob_weight`` is chosen on the validation split at the end of training
(:func:`gcmr.evaluate.runner.choose_fusion_weight`) and saved in the model manifest
(``rerank``), not guessed. With a candidate list as large as the corpus and weight 0, the hybrid ranking is exactly the dense
ranking of the query head (tested). ``mode = "none"`` is pure generation (the papers' tables).

Item vectors are read from the corpus's memory-mapped ``embeddings.npy``, only the candidate
rows of each batch (:class:`ItemVectors`), so resident memory does not grow with the corpus;
or from a compact copy in the model directory (PQ codes or float16 rows,
:class:`gcmr.search.compact.CompactItemVectors`, ``gcmr compress-vectors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcmr.config import JsonConfig
from gcmr.errors import ArtifactError, ConfigError, CorpusError

RERANK_MODES = ("hybrid", "none")
# what candidates are scored against: the corpus's media embeddings by the query head, the
# model directory's compact copy of them (PQ codes or float16 rows, gcmr.search.compact), or
# the items' caption vectors by a pretrained query encoder's sentence vector (text space)
ITEM_VECTOR_SOURCES = ("embeddings", "compact", "captions", "blend")
# blend: (1 - text_weight) * the media cosine + text_weight * the caption cosine; the weights
# tried on the validation split (0 and 1 are "embeddings" and "captions")
TEXT_WEIGHT_GRID = (0.25, 0.5, 0.75)
# the fusion weights tried on the validation split (0 = cosine only)
WEIGHT_GRID = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class RerankConfig(JsonConfig):
    """How a generative model with a query head ranks its candidates (saved in its manifest)."""

    mode: str = "hybrid"  # hybrid | none (pure generation)
    logprob_weight: float = 0.0  # weight of the sequence log-probability in the fused score
    # beam width when the caller gives no beam; the beam's items and their clusters'
    # members (expand_depth, max_candidates) are reranked. Measured on the 5k world's hybrid
    # model (benchmarks/results/hybrid, 2,000 test queries): beam 20 + 100 candidates R@1
    # 0.767 / R@10 0.957; beam 10 + 100: 0.767 / 0.9425; beam 10 + 150: 0.7755 / 0.957;
    # beam 10 + 200: 0.775 / 0.9585; beam 15 + 150: 0.7765 / 0.9665. A beam of 10 decodes
    # about 1.6x faster than 20 (benchmarks/results/hybrid_scale)
    candidates: int = 10
    # candidate expansion (PrefixExpander): the items sharing the first expand_depth codes of
    # a beam's identifier join the list, at most max_candidates in all (0 = off). Measured on
    # the 5k world (benchmarks/results/hybrid): depth 1 (the coarse cluster), 100 candidates
    # takes R@1 0.7345 -> 0.767 and R@10 0.898 -> 0.957; depth 2 or 3 adds almost nothing
    expand_depth: int = 1
    max_candidates: int = 150
    # embeddings: cosine of the query head's vector and the item's media embedding; compact:
    # the same against the model directory's compact vectors (gcmr compress-vectors); captions:
    # max cosine of a pretrained query encoder's sentence vector over the item's caption
    # vectors (CaptionVectors; for media embeddings not aligned with text). Chosen on the val
    # split at training time when the model has a pretrained encoder
    # blend: both, (1 - text_weight) * media cosine + text_weight * caption cosine (a small
    # corpus whose captions a pretrained encoder reads well, with media embeddings that
    # carry what captions do not say)
    item_vectors: str = "embeddings"
    text_weight: float = 0.0  # the caption cosine's share of a blend (0 < w < 1)

    def __post_init__(self) -> None:
        if self.item_vectors not in ITEM_VECTOR_SOURCES:
            raise ConfigError(f"rerank item_vectors must be one of {list(ITEM_VECTOR_SOURCES)}, "
                              f"got {self.item_vectors!r}")
        if self.item_vectors == "blend" and not 0.0 < self.text_weight < 1.0:
            raise ConfigError(f"rerank text_weight of a blend must be in (0, 1), got "
                              f"{self.text_weight}")
        if self.expand_depth < 0 or self.max_candidates < 1:
            raise ConfigError(f"rerank expand_depth must be >= 0 and max_candidates >= 1, got "
                              f"{self.expand_depth} and {self.max_candidates}")
        if isinstance(self.candidates, bool) or self.candidates < 1:
            raise ConfigError(f"rerank candidates must be >= 1, got {self.candidates}")
        if self.mode not in RERANK_MODES:
            raise ConfigError(f"rerank must be one of {list(RERANK_MODES)}, got {self.mode!r}")
        if not np.isfinite(self.logprob_weight) or self.logprob_weight < 0:
            raise ConfigError(f"logprob_weight must be a finite number >= 0, got "
                              f"{self.logprob_weight}")


def open_item_embeddings(corpus_path: str | Path) -> np.ndarray:
    """The corpus's ``embeddings.npy`` as a read-only memory map."""
    path = Path(corpus_path) / "embeddings.npy"
    if not path.is_file():
        raise CorpusError(f"{path}: missing; the model's corpus has moved (pass --corpus)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CorpusError(f"{path}: cannot read embeddings ({exc})") from exc


class ItemVectors:
    """L2-normalized item embeddings, read on demand: only the rows a batch asks for."""

    def __init__(self, items: Any) -> None:
        if getattr(items, "ndim", 0) != 2:
            raise ConfigError(f"item embeddings must be [N, D], got shape "
                              f"{list(getattr(items, 'shape', []))}")
        self.items = items

    @staticmethod
    def query(model: Any, enc: Any) -> torch.Tensor:
        """The query vectors these items are scored against: the model's query head."""
        return model.query_vectors(enc)

    def cosines(self, queries: torch.Tensor, rows: np.ndarray) -> np.ndarray:
        """Cosine [Q, C] of normalized ``queries`` [Q, D] with items ``rows`` [Q, C] (-inf
        where a row is -1 padding)."""
        valid = rows >= 0
        uniq = np.unique(rows[valid])
        out = np.full(rows.shape, -np.inf, dtype=np.float32)
        if len(uniq) == 0:
            return out
        block = np.asarray(self.items[uniq], dtype=np.float32)  # reads only these rows
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block = block / np.maximum(norms, 1e-12)
        q = queries.detach().float().cpu().numpy()
        pos = np.searchsorted(uniq, np.where(valid, rows, uniq[0]))
        cos = np.einsum("qd,qcd->qc", q, block[pos])
        out[valid] = cos[valid]
        return out


class CaptionVectors:
    """Text-space item vectors: every item's caption vectors (L2-normalized, float16,
    ``caption_vectors.npy`` [C, h] in the model directory, grouped by item with
    ``caption_offsets.npy`` [N + 1]), memory-mapped; a candidate's score is the best cosine of
    the query's sentence vector over its captions (the caption matcher's score, restricted to
    the candidates; an item without captions scores -1)."""

    def __init__(self, vectors: Any, offsets: np.ndarray) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        if getattr(vectors, "ndim", 0) != 2 or offsets.ndim != 1 or len(offsets) < 1 \
                or offsets[-1] != len(vectors) or np.any(np.diff(offsets) < 0):
            raise ConfigError("caption vectors must be [C, h] with non-decreasing offsets "
                              "[N + 1] ending at C")
        self.vectors = vectors
        self.offsets = offsets

    @classmethod
    def open(cls, model_dir: str | Path, num_items: int) -> CaptionVectors:
        """The caption vectors a training run saved in ``model_dir``."""
        from gcmr.model.io import CAPTION_OFFSETS, CAPTION_VECTORS

        paths = [Path(model_dir) / CAPTION_VECTORS, Path(model_dir) / CAPTION_OFFSETS]
        try:
            vectors = np.load(paths[0], mmap_mode="r", allow_pickle=False)
            offsets = np.load(paths[1], allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{model_dir}: missing or unreadable caption vectors "
                                f"({exc}); retrain, or search with item_vectors=embeddings") \
                from exc
        if len(offsets) != num_items + 1:
            raise ArtifactError(f"{paths[1]}: offsets for {len(offsets) - 1} items, the index "
                                f"has {num_items}")
        try:
            return cls(vectors, offsets)
        except ConfigError as exc:
            raise ArtifactError(f"{paths[0]}: {exc}") from exc

    @staticmethod
    def query(model: Any, enc: Any) -> torch.Tensor:
        """The pretrained encoder's sentence vectors."""
        return model.text_vectors(enc)

    def cosines(self, queries: torch.Tensor, rows: np.ndarray, *, chunk: int = 64
                ) -> np.ndarray:
        """Best caption cosine [Q, C] of ``queries`` [Q, h] for candidates ``rows`` [Q, C]
        (-inf at -1 padding). Reads each needed caption row once per call."""
        valid = rows >= 0
        out = np.full(rows.shape, -np.inf, dtype=np.float32)
        if not valid.any():
            return out
        safe = np.where(valid, rows, 0)
        starts, counts = self.offsets[safe], self.offsets[safe + 1] - self.offsets[safe]
        width = max(int(counts.max()), 1)
        caps = starts[..., None] + np.arange(width)  # [Q, C, m]
        has = (np.arange(width) < counts[..., None]) & valid[..., None]
        uniq = np.unique(caps[has])
        block = np.asarray(self.vectors[uniq], dtype=np.float32) if len(uniq) else \
            np.zeros((1, self.vectors.shape[1]), dtype=np.float32)
        pos = np.searchsorted(uniq, np.where(has, caps, uniq[0] if len(uniq) else 0))
        q = queries.detach().float().cpu().numpy()
        for a in range(0, len(q), chunk):
            b = a + chunk
            sc = np.einsum("qh,qcmh->qcm", q[a:b], block[pos[a:b]])
            sc[~has[a:b]] = -np.inf
            best = sc.max(axis=-1)
            best[(counts[a:b] == 0) & valid[a:b]] = -1.0
            out[a:b] = np.where(valid[a:b], best, -np.inf)
        return out


class BlendedVectors:
    """Both scores of a model with a pretrained query encoder: a candidate's
    ``(1 - text_weight) * cosine(query head, media embedding) + text_weight * best caption
    cosine(sentence vector, captions)``, each from its own scorer (:class:`ItemVectors` and
    :class:`CaptionVectors`), the query vectors of both from one encoder pass."""

    def __init__(self, media: ItemVectors, captions: CaptionVectors, text_weight: float
                 ) -> None:
        if not 0.0 < text_weight < 1.0:
            raise ConfigError(f"text_weight must be in (0, 1), got {text_weight}")
        self.media, self.captions, self.text_weight = media, captions, float(text_weight)

    @property
    def items(self) -> Any:
        """The media embeddings (what a query by example reads)."""
        return self.media.items

    @property
    def vectors(self) -> Any:
        return self.captions.vectors

    @property
    def offsets(self) -> np.ndarray:
        return self.captions.offsets

    def query(self, model: Any, enc: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.media.query(model, enc), self.captions.query(model, enc)

    def cosines(self, queries: tuple[torch.Tensor, torch.Tensor], rows: np.ndarray
                ) -> np.ndarray:
        """The blended score [Q, C] of candidate ``rows`` (-inf at -1 padding) for the pair
        of query vectors :meth:`query` returns."""
        media, text = queries
        return blend_scores(self.media.cosines(media, rows), self.captions.cosines(text, rows),
                            self.text_weight)


def blend_scores(media: np.ndarray, text: np.ndarray, text_weight: float) -> np.ndarray:
    """``(1 - text_weight) * media + text_weight * text`` as float32 (-inf padding stays)."""
    w = np.float32(text_weight)
    return ((1 - w) * media + w * text).astype(np.float32)


def fuse(cosines: np.ndarray, logprobs: np.ndarray, weight: float) -> np.ndarray:
    """``cosine + weight * logprob``; -inf where either is (padding)."""
    with np.errstate(invalid="ignore"):
        fused = cosines + weight * logprobs if weight else cosines.copy()
    fused[~(np.isfinite(cosines) & np.isfinite(logprobs))] = -np.inf
    return fused.astype(np.float32)


def rank(fused: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of each candidate list by fused score: ``(scores [Q, k], rows [Q, k])``,
    -inf / -1 padding when a list is shorter than ``k``. Ties keep the generation order."""
    order = np.argsort(-fused, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(fused, order, axis=1)
    out_rows = np.where(np.isfinite(scores), np.take_along_axis(rows, order, axis=1), -1)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        out_rows = np.pad(out_rows, ((0, 0), (0, pad)), constant_values=-1)
    return scores.astype(np.float32), out_rows.astype(np.int64)


class PrefixExpander:
    """Candidate expansion for hybrid search: every item whose identifier shares its first
    ``depth`` codes with one of the beam's identifiers joins the candidate list (GENIUS
    expands each beam's code to the items that share it; GDR lets generation pick the
    cluster and dense scoring work inside it). Items are grouped once by that prefix (a sort
    of the mixed-radix prefix keys), so a batch's expansion is one ``searchsorted``.

    The list is bounded: the beam's own items first (by generation rank), then the members of
    each beam's prefix in beam order, up to ``max_candidates``. An added item carries the
    log-probability of the best beam sharing its prefix (an upper bound of its own). When the
    corpus holds no more items than the list, every item is a candidate (the rest after the
    prefix members): the rerank then scores the whole corpus, at the same bounded cost.
    """

    def __init__(self, codes: np.ndarray, level_sizes: list[int], depth: int,
                 rows: np.ndarray | None = None) -> None:
        """``rows``: the items that may join a list (default all; an index with deleted
        items passes its live rows, so a deleted item is never a candidate)."""
        codes = np.asarray(codes, dtype=np.int64)
        if not 1 <= depth < codes.shape[1]:
            raise ConfigError(f"expansion depth must be in [1, {codes.shape[1] - 1}], got "
                              f"{depth}")
        self.depth = depth
        self._keys = self._prefix_keys(codes, level_sizes)
        if rows is None:
            self.order = np.argsort(self._keys, kind="stable")
        else:
            rows = np.asarray(rows, dtype=np.int64)
            self.order = rows[np.argsort(self._keys[rows], kind="stable")]
        self.sorted_keys = self._keys[self.order]
        self.level_sizes = list(level_sizes)

    def _prefix_keys(self, codes: np.ndarray, level_sizes: list[int]) -> np.ndarray:
        key = np.zeros(len(codes), dtype=np.int64)
        for lvl in range(self.depth):
            key = key * int(level_sizes[lvl]) + codes[:, lvl]
        return key

    def expand(self, rows: np.ndarray, logprobs: np.ndarray, max_candidates: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` / ``logprobs`` [Q, W] of the beam (-1 / -inf padding) -> the expanded
        ``(rows [Q, C], logprobs [Q, C])``, ``C = max(max_candidates, W)``, padded."""
        q, w = rows.shape
        width = max(max_candidates, w)
        out_rows = np.full((q, width), -1, dtype=np.int64)
        out_logp = np.full((q, width), -np.inf, dtype=np.float32)
        valid = rows >= 0
        # the beam's own items first, in generation order (padding compacted away)
        own = np.cumsum(valid, axis=1) - 1
        qi, bj = np.nonzero(valid)
        out_rows[qi, own[qi, bj]] = rows[qi, bj]
        out_logp[qi, own[qi, bj]] = logprobs[qi, bj]
        n_own = valid.sum(axis=1)
        # one group per distinct prefix of a row, in the order of its first beam
        keys = np.where(valid, self._keys[np.maximum(rows, 0)], -1)
        first = valid.copy()
        for j in range(1, w):  # W is the beam width (tens): mark repeats of earlier keys
            first[:, j] &= ~(keys[:, :j] == keys[:, j:j + 1]).any(axis=1)
        gi, gj = np.nonzero(first)  # row-major: rows in order, beams in order within a row
        if len(gi) == 0:
            return out_rows, out_logp
        lo = np.searchsorted(self.sorted_keys, keys[gi, gj], side="left")
        hi = np.searchsorted(self.sorted_keys, keys[gi, gj], side="right")
        # each group contributes at most `width` members (no row can take more)
        counts = np.minimum(hi - lo, width)
        total = int(counts.sum())
        group = np.repeat(np.arange(len(gi)), counts)
        offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        members = self.order[lo[group] + offset]
        owner = gi[group]
        # drop members that are the row's own beam items
        n_items = len(self._keys)
        beam_keys = np.unique(qi.astype(np.int64) * n_items + rows[qi, bj])
        keep = ~np.isin(owner.astype(np.int64) * n_items + members, beam_keys,
                        assume_unique=False)
        members, owner, group = members[keep], owner[keep], group[keep]
        # position in the row: after its own items, in generation order; bounded by width
        row_start = np.searchsorted(owner, np.arange(q), side="left")
        pos = n_own[owner] + np.arange(len(owner)) - row_start[owner]
        fits = pos < width
        out_rows[owner[fits], pos[fits]] = members[fits]
        out_logp[owner[fits], pos[fits]] = logprobs[gi[group[fits]], gj[group[fits]]]
        if len(self.order) <= width:  # a corpus no larger than the list: every item joins
            self._fill(out_rows, out_logp, logprobs, valid)
        return out_rows, out_logp

    def _fill(self, out_rows: np.ndarray, out_logp: np.ndarray, logprobs: np.ndarray,
              valid: np.ndarray) -> None:
        """Append every expandable item a list lacks (a small corpus, at most ``width`` of
        them), after its beam and prefix members, with the list's lowest beam log-probability
        (an upper bound of their own, as for the prefix members). Lists with no beam item stay
        empty."""
        n_items = len(self._keys)
        present = np.zeros((len(out_rows), n_items + 1), dtype=bool)
        present[np.arange(len(out_rows))[:, None], np.where(out_rows >= 0, out_rows, n_items)] \
            = True
        missing = ~present[:, self.order] & valid.any(axis=1, keepdims=True)  # [Q, N_live]
        qi, mj = np.nonzero(missing)
        if len(qi) == 0:
            return
        pos = (out_rows >= 0).sum(axis=1)[qi] + np.cumsum(missing, axis=1)[qi, mj] - 1
        floor = np.where(valid, logprobs, np.inf).min(axis=1)
        out_rows[qi, pos] = self.order[mj]
        out_logp[qi, pos] = floor[qi]


def expander_for(codes: np.ndarray, level_sizes: list[int],
                 config: RerankConfig, rows: np.ndarray | None = None
                 ) -> PrefixExpander | None:
    """The :class:`PrefixExpander` that ``config`` asks for over an index's identifiers
    (restricted to item ``rows`` when given), or ``None`` when its ``expand_depth`` is 0."""
    if not config.expand_depth:
        return None
    return PrefixExpander(codes, list(level_sizes), config.expand_depth, rows=rows)


class StackedRows:
    """Row-indexable concatenation of item matrices (the corpus's memory-mapped embeddings,
    then the rows of items added since training, :mod:`gcmr.search.updates`), read on
    demand: ``stacked[rows]`` reads only those rows of each part. Shaped like the arrays
    :class:`ItemVectors` and the trainer read (``shape``, ``ndim``, ``dtype``, ``len``)."""

    def __init__(self, parts: list[Any]) -> None:
        if not parts or any(getattr(p, "ndim", 0) != 2 for p in parts) or \
                len({int(p.shape[1]) for p in parts}) != 1:
            raise ConfigError("stacked item rows need [N_i, D] parts of one dimension D")
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
        self.dtype = np.result_type(*[p.dtype for p in parts])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.starts[-1]), int(self.parts[0].shape[1])

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, rows: Any) -> np.ndarray:
        if isinstance(rows, slice):
            rows = np.arange(len(self))[rows]
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"item rows outside [0, {len(self)})")
        out = np.empty((len(flat), self.shape[1]), dtype=self.dtype)
        part = np.searchsorted(self.starts, flat, side="right") - 1
        for i, arr in enumerate(self.parts):
            where = np.flatnonzero(part == i)
            if len(where):
                out[where] = np.asarray(arr[flat[where] - self.starts[i]], dtype=self.dtype)
        return out.reshape(*rows.shape, self.shape[1])
