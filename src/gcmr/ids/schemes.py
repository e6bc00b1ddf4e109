"""Identifier schemes: estimator-style objects that map item embeddings to semantic codes.

A scheme is fitted once (``fit(embeddings)`` sets trailing-underscore attributes) and then
``encode(embeddings) -> codes [n, S]`` maps any embeddings, old or new, to ``S`` level-local
semantic codes; ``semantic_sizes_[l]`` is the size of level ``l``. The unique counter that
makes identifiers distinct is not part of a scheme: :mod:`gcmr.ids.index` appends it.

Schemes (CART section 3.2 and its ablations):

- ``cart``    coarse K-Means token + ``M`` RQ-VAE tokens on the residual to the centroid
- ``rq``      ``M + 1`` RQ-VAE tokens on the raw embedding ("w/o K-Means")
- ``hkmeans`` hierarchical K-Means path of ``M + 1`` tokens, NCI/GRACE style ("w/o RQ-VAE")
- ``atomic``  no semantic token: the identifier is the unique counter alone (one token per item)
- ``random``  ``M + 1`` pseudo-random tokens (a keyed hash of the embedding)

New schemes register with :func:`register_scheme` (AVG adds ``avg``).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from gcmr.errors import ArtifactError, ConfigError, GcmrError
from gcmr.ids.config import IndexConfig
from gcmr.ids.kmeans import assign, kmeans, minibatch_kmeans
from gcmr.ids.rqvae import RQVAE, TrainOptions, train_rqvae
from gcmr.progress import note, progress

SCHEMES: dict[str, type[IdScheme]] = {}


def register_scheme(name: str, cls: type[IdScheme] | None = None) -> Any:
    """Register a scheme class under ``name``; usable as ``@register_scheme("avg")``."""

    def deco(c: type[IdScheme]) -> type[IdScheme]:
        c.name = name
        SCHEMES[name] = c
        return c

    return deco(cls) if cls is not None else deco


def get_scheme(name: str) -> type[IdScheme]:
    """The scheme class registered as ``name``. A scheme defined outside this module registers
    itself on import; by convention ``gcmr.ids.<name>`` is imported on first use."""
    if name not in SCHEMES and name.isidentifier():
        import importlib

        try:
            importlib.import_module(f"gcmr.ids.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gcmr.ids.{name}":
                raise
    if name not in SCHEMES:
        raise ConfigError(f"index option scheme: unknown scheme {name!r} "
                          f"(available: {', '.join(sorted(SCHEMES))})")
    return SCHEMES[name]


class NotFittedError(GcmrError):
    """A scheme was used before ``fit`` (or ``from_state``)."""


# ----------------------------------------------------------------------------- helpers


class RowView:
    """Rows ``rows`` of a (memory-mapped) matrix, read as float32 on demand."""

    def __init__(self, array: np.ndarray, rows: np.ndarray) -> None:
        self.array = array
        self.rows = rows
        self.shape = (len(rows), array.shape[1])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.asarray(self.array[self.rows[idx]], dtype=np.float32)


def fit_rows(n: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded subsample of at most ``max_rows`` of ``n`` rows."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def iter_chunks(embeddings: np.ndarray, batch: int) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, float32 tensor)`` chunks of ``embeddings``: bounded memory for memmaps."""
    for start in range(0, len(embeddings), batch):
        yield start, torch.from_numpy(np.array(embeddings[start:start + batch], dtype=np.float32))


@contextlib.contextmanager
def progress_task(show: bool, description: str, total: int) -> Iterator[Callable[..., None]]:
    """A progress bar; yields ``update(done, info="")``."""
    with progress(disable=not show) as bar:
        task = bar.add_task(description, total=total, info="")
        yield lambda done, info="": bar.update(task, completed=done, info=info)


def _pow2(x: float, *, up: bool = False) -> int:
    """The power of two nearest to ``x`` (``up``: the next one at or above it)."""
    e = math.log2(max(x, 1.0))
    return 1 << max(0, math.ceil(e - 1e-9) if up else round(e))


def sizes_for(num_items: int, fine_levels: int) -> tuple[int, int]:
    """The size rule of ``num_clusters = 0`` / ``codebook_size = 0``: ``(K, C)`` from the
    number of items N. K = sqrt(N) rounded to a power of two, in [16, 1024]; C = the
    ``fine_levels``-th root of 2 N / K (room for twice the items under a cluster) rounded up
    to a power of two, in [4, 256]. So small corpora get small codebooks whose codes
    many items share (ComGTIR: a larger codebook lowered R@1; GRACE / NCI use ~30 per
    level) instead of 128 x 128 x 128 for 5,000 items. 5k -> 64 x 16 x 16; 100k -> 256 x 32 x
    32; 1M -> 1024 x 64 x 64; 10M -> 1024 x 256 x 256."""
    n = max(int(num_items), 1)
    k = sqrt_size(n)
    c = min(max(_pow2((2.0 * n / k) ** (1.0 / max(fine_levels, 1)), up=True), 4), 256)
    return k, c


def sqrt_size(num_items: int) -> int:
    """sqrt(N) rounded to the nearest power of two, in [16, 1024]: CART's cluster count K of
    the size rule, and AVG's voken codebook size (``voken_codebook_size = 0``, the default;
    measured on the 5k world: 64 vokens beat 256 and 1024, see the README's AVG section).
    5k -> 64; 100k -> 256; 1M and more -> 1024, the AVG paper's size."""
    return min(max(_pow2(math.sqrt(max(int(num_items), 1))), 16), 1024)


def rule_sizes(cfg: Any, num_items: int) -> tuple[int, int, dict[str, Any] | None]:
    """``(num_clusters, codebook_size, record)``: the config's values, with a 0 replaced by
    :func:`sizes_for` (``record`` says so for the manifest; None when neither is 0)."""
    if cfg.num_clusters and cfg.codebook_size:
        return cfg.num_clusters, cfg.codebook_size, None
    k, c = sizes_for(num_items, cfg.num_fine_levels)
    k, c = cfg.num_clusters or k, cfg.codebook_size or c
    note(f"sizes from N = {num_items:,} items (num_clusters / codebook_size 0): "
         f"K = {k}, codebook = {c}")
    return k, c, {"rule": "K = pow2(sqrt N) in [16, 1024]; C = pow2_up((2N / K)^(1/M)) in "
                          "[4, 256]", "num_items": int(num_items), "num_clusters": k,
                  "codebook_size": c}


def adapt_size(value: int, num_rows: int, option: str, what: str) -> int:
    """A codebook/cluster count needs about two rows per entry: larger values shrink to
    ``max(1, num_rows // 4)`` with a note (the adapted value goes into the manifest)."""
    if value * 2 <= num_rows:
        return value
    new = max(1, num_rows // 4)
    note(f"{option}={value} is too large for {num_rows} {what}; using {new}")
    return new


def _check_matrix(embeddings: Any, dim: int | None = None) -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    if not hasattr(embeddings, "shape"):
        embeddings = np.asarray(embeddings, dtype=np.float32)
    if len(embeddings.shape) != 2:
        raise ConfigError(f"embeddings must be a [N, D] matrix, got shape {tuple(embeddings.shape)}")
    if dim is not None and embeddings.shape[1] != dim:
        raise ConfigError(f"embeddings have dimension {embeddings.shape[1]} but the scheme was "
                          f"fitted on dimension {dim}")
    return embeddings


def _train_options(config: IndexConfig, seed: int) -> TrainOptions:
    return TrainOptions(epochs=config.epochs, max_steps=config.max_steps,
                        batch_size=config.batch_size, lr=config.lr,
                        warmup_steps=config.warmup_steps, alpha=config.alpha, beta=config.beta,
                        restart_interval=config.restart_interval,
                        restart_threshold=config.restart_threshold,
                        init_rows=config.init_kmeans_rows, kmeans_iters=config.kmeans_iters,
                        seed=seed)


def _fit_rqvae(config: IndexConfig, *, dim: int, num_levels: int, codebook_size: int,
               batch_of: Callable[[np.ndarray], torch.Tensor], num_rows: int,
               show_progress: bool) -> tuple[RQVAE, dict]:
    torch.manual_seed(config.seed)
    model = RQVAE(dim, list(config.hidden_dims), config.latent_dim, num_levels, codebook_size)
    opts = _train_options(config, config.seed)
    total = opts.epochs * -(-num_rows // min(opts.batch_size, num_rows))
    total = min(total, opts.max_steps) if opts.max_steps else total
    with progress_task(show_progress, "RQ-VAE", total) as update:
        info = train_rqvae(model, batch_of, num_rows, opts,
                           on_step=lambda s, t, p: update(s, f"loss {p['loss']:.4f}"))
    return model, info


# ----------------------------------------------------------------------------- base class


class IdScheme:
    """Base class: ``fit`` / ``encode`` / ``state_dict`` / ``from_state``.

    After fitting: ``config_`` (the config with sizes adapted to the data), ``dim_`` (input
    dimension), ``semantic_sizes_`` (size of each semantic level) and ``fit_info_`` (training
    statistics, JSON-serializable).
    """

    name: ClassVar[str] = ""

    def __init__(self, config: IndexConfig) -> None:
        self.config = config

    # -- estimator protocol
    def fit(self, embeddings: Any, *, corpus: Any = None, show_progress: bool = False) -> IdScheme:
        """Fit on ``embeddings`` [N, D] (array or memmap). ``corpus`` is given by
        :func:`gcmr.ids.build_index` for schemes that need more than embeddings (AVG)."""
        raise NotImplementedError

    def encode(self, embeddings: Any) -> np.ndarray:
        """Semantic codes int64 [n, S] of ``embeddings`` [n, D], chunked (bounded memory)."""
        self._check_fitted()
        emb = _check_matrix(embeddings, self.dim_)
        out = np.empty((len(emb), len(self.semantic_sizes_)), dtype=np.int64)
        for start, chunk in iter_chunks(emb, self.config_.encode_batch_size):
            out[start:start + len(chunk)] = self._encode_chunk(chunk)
        return out

    def _encode_chunk(self, x: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    @property
    def fitted(self) -> bool:
        return hasattr(self, "semantic_sizes_")

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit() first")

    # -- persistence (tensors -> safetensors, info -> manifest JSON)
    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {}

    def state_info(self) -> dict[str, Any]:
        """JSON part of the fitted state (the adapted config is saved by the index)."""
        self._check_fitted()
        return {"dim": self.dim_, "semantic_sizes": list(self.semantic_sizes_),
                "fit_info": self.fit_info_}

    @classmethod
    def from_state(cls, config: IndexConfig, tensors: dict[str, torch.Tensor],
                   info: dict[str, Any]) -> IdScheme:
        """Rebuild a fitted scheme from ``state_dict()`` tensors and ``state_info()``."""
        scheme = cls(config)
        scheme.config_ = config
        try:
            scheme.dim_ = int(info["dim"])
            scheme.semantic_sizes_ = [int(s) for s in info["semantic_sizes"]]
            scheme.fit_info_ = dict(info.get("fit_info", {}))
            scheme._load_tensors(tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{cls.name} scheme state is incomplete or corrupted: {exc}") from exc
        return scheme

    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass


def _rq_state(model: RQVAE, prefix: str = "rqvae.") -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in model.state_dict().items()}


def _rq_from_state(tensors: dict[str, torch.Tensor], config: IndexConfig, dim: int,
                   num_levels: int, codebook_size: int, prefix: str = "rqvae.") -> RQVAE:
    model = RQVAE(dim, list(config.hidden_dims), config.latent_dim, num_levels, codebook_size)
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


# ----------------------------------------------------------------------------- cart


@register_scheme("cart")
class CartScheme(IdScheme):
    """CART identifiers (section 3.2): coarse K-Means token, then ``M`` RQ-VAE tokens of the
    residual ``embedding - centroid``."""

    def fit(self, embeddings: Any, *, corpus: Any = None, show_progress: bool = False) -> CartScheme:
        emb = _check_matrix(embeddings)
        cfg = self.config
        rows = fit_rows(len(emb), cfg.max_fit_items, cfg.seed)
        view = RowView(emb, rows)
        k, c, rule = rule_sizes(cfg, len(emb))
        k = adapt_size(k, len(rows), "num_clusters", "items")
        c = adapt_size(c, len(rows), "codebook_size", "residuals")
        self.config_ = cfg.replace(num_clusters=k, codebook_size=c)
        steps = cfg.kmeans_epochs * -(-len(rows) // min(max(cfg.kmeans_batch_size, k), len(rows)))
        with progress_task(show_progress, "K-Means", steps) as update:
            centroids, km_info = minibatch_kmeans(view, k, epochs=cfg.kmeans_epochs,
                                                  batch_size=cfg.kmeans_batch_size, seed=cfg.seed,
                                                  init_rows=cfg.init_kmeans_rows,
                                                  init_iters=cfg.kmeans_iters,
                                                  on_step=lambda d, t: update(d))
        self.centroids_ = torch.from_numpy(centroids)
        labels = assign(view, self.centroids_)
        km_info["inertia_per_item"] = _inertia(view, self.centroids_, labels)

        def batch_of(idx: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(view[idx]) - self.centroids_[labels[idx]]

        self.rqvae_, rq_info = _fit_rqvae(self.config_, dim=emb.shape[1],
                                          num_levels=cfg.num_fine_levels, codebook_size=c,
                                          batch_of=batch_of, num_rows=len(rows),
                                          show_progress=show_progress)
        self.dim_ = int(emb.shape[1])
        self.fit_info_ = {"fit_items": len(rows), "kmeans": km_info, "rqvae": rq_info,
                          **({"size_rule": rule} if rule else {})}
        self.semantic_sizes_ = [k] + [c] * cfg.num_fine_levels
        return self

    @torch.no_grad()
    def _encode_chunk(self, x: torch.Tensor) -> np.ndarray:
        coarse = assign(x, self.centroids_)
        fine = self.rqvae_.encode(x - self.centroids_[coarse])
        return torch.cat([coarse.unsqueeze(1), fine], dim=1).numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Approximate embeddings of semantic codes [n, 1 + M]: centroid + decoded residual."""
        self._check_fitted()
        codes = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        z_q = self.rqvae_.decode_latent(codes[:, 1:])
        return (self.centroids_[codes[:, 0]] + self.rqvae_.decode(z_q)).numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {"coarse.centroids": self.centroids_, **_rq_state(self.rqvae_)}

    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.centroids_ = tensors["coarse.centroids"].float()
        cfg = self.config_
        if tuple(self.centroids_.shape) != (self.semantic_sizes_[0], self.dim_):
            raise ValueError(f"coarse.centroids has shape {tuple(self.centroids_.shape)}")
        self.rqvae_ = _rq_from_state(tensors, cfg, self.dim_, len(self.semantic_sizes_) - 1,
                                     self.semantic_sizes_[1])


def _inertia(view: RowView, centroids: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean squared distance of the rows to their assigned centroid (chunked)."""
    total = 0.0
    for start in range(0, len(view), 16384):
        x = torch.from_numpy(view[slice(start, start + 16384)])
        total += float((x - centroids[labels[start:start + len(x)]]).pow(2).sum())
    return total / max(1, len(view))


# ----------------------------------------------------------------------------- rq


@register_scheme("rq")
class RQScheme(IdScheme):
    """RQ-VAE alone on the raw embeddings, ``M + 1`` levels (CART ablation "w/o K-Means")."""

    def fit(self, embeddings: Any, *, corpus: Any = None, show_progress: bool = False) -> RQScheme:
        emb = _check_matrix(embeddings)
        cfg = self.config
        rows = fit_rows(len(emb), cfg.max_fit_items, cfg.seed)
        view = RowView(emb, rows)
        c = adapt_size(cfg.codebook_size, len(rows), "codebook_size", "items")
        self.config_ = cfg.replace(codebook_size=c)
        levels = cfg.num_fine_levels + 1
        self.rqvae_, rq_info = _fit_rqvae(self.config_, dim=emb.shape[1], num_levels=levels,
                                          codebook_size=c,
                                          batch_of=lambda idx: torch.from_numpy(view[idx]),
                                          num_rows=len(rows), show_progress=show_progress)
        self.dim_ = int(emb.shape[1])
        self.fit_info_ = {"fit_items": len(rows), "rqvae": rq_info}
        self.semantic_sizes_ = [c] * levels
        return self

    def _encode_chunk(self, x: torch.Tensor) -> np.ndarray:
        return self.rqvae_.encode(x).numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Approximate embeddings of semantic codes [n, M + 1]."""
        self._check_fitted()
        z_q = self.rqvae_.decode_latent(torch.as_tensor(np.asarray(codes, dtype=np.int64)))
        return self.rqvae_.decode(z_q).numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return _rq_state(self.rqvae_)

    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.rqvae_ = _rq_from_state(tensors, self.config_, self.dim_, len(self.semantic_sizes_),
                                     self.semantic_sizes_[0])


# ----------------------------------------------------------------------------- hkmeans


@register_scheme("hkmeans")
class HKMeansScheme(IdScheme):
    """Hierarchical K-Means identifiers (NCI / GRACE structured ids; CART "w/o RQ-VAE").

    ``M + 1`` levels with branching factor ``b`` (``hkmeans_branching``, default
    ``num_clusters``). A node with more than ``b`` items is split by k-means into ``b``
    children; a node with at most ``b`` items gets one child per item (the item's own
    embedding), so paths have a fixed length. Encoding descends the tree to the nearest child
    at each level. The tree is kept per level as CSR: the children of node ``u`` at depth ``l``
    are rows ``offsets.l[u] : offsets.l[u + 1]`` of ``centroids.l`` (code = row - offset).
    """

    def fit(self, embeddings: Any, *, corpus: Any = None,
            show_progress: bool = False) -> HKMeansScheme:
        emb = _check_matrix(embeddings)
        cfg = self.config
        b = cfg.hkmeans_branching or cfg.num_clusters
        if b < 2:
            raise ConfigError(f"index option hkmeans_branching must be >= 2, got {b}")
        self.config_ = cfg.replace(hkmeans_branching=b)
        rows = fit_rows(len(emb), cfg.max_fit_items, cfg.seed)
        view = RowView(emb, rows)
        depth = cfg.num_fine_levels + 1
        # members of each node at the current depth, as index arrays into the fit rows
        members: list[np.ndarray] = [np.arange(len(rows))]
        node_centroid: list[torch.Tensor | None] = [None]
        self.offsets_: list[torch.Tensor] = []
        self.centroids_: list[torch.Tensor] = []
        kmeans_runs = 0
        with progress_task(show_progress, "hierarchical K-Means", depth) as update:
            for lvl in range(depth):
                offsets = [0]
                cents: list[torch.Tensor] = []
                next_members: list[np.ndarray] = []
                next_centroid: list[torch.Tensor | None] = []
                for u, m in enumerate(members):
                    if len(m) > b:
                        c, labels = self._split(view, m, b, lvl, u)
                        kmeans_runs += 1
                        groups = [m[labels == j] for j in range(b)]
                    elif len(m) > 0:
                        c = torch.from_numpy(view[m])
                        groups = [m[j:j + 1] for j in range(len(m))]
                    else:  # an emptied cluster: one child, its own centroid, for descent
                        c = node_centroid[u].unsqueeze(0)
                        groups = [m]
                    cents.append(c)
                    offsets.append(offsets[-1] + len(c))
                    next_members.extend(groups)
                    next_centroid.extend(c)
                self.offsets_.append(torch.tensor(offsets, dtype=torch.int64))
                self.centroids_.append(torch.cat(cents))
                members, node_centroid = next_members, next_centroid
                update(lvl + 1, f"{len(members)} nodes")
        self.dim_ = int(emb.shape[1])
        self.semantic_sizes_ = [b] * depth
        self.fit_info_ = {"fit_items": len(rows), "branching": b, "kmeans_runs": kmeans_runs,
                          "nodes_per_level": [len(c) for c in self.centroids_]}
        return self

    def _split(self, view: RowView, m: np.ndarray, b: int, lvl: int, u: int
               ) -> tuple[torch.Tensor, np.ndarray]:
        cfg = self.config
        seed = cfg.seed + 1_000_003 * lvl + u
        if len(m) > cfg.init_kmeans_rows * 4:  # large node (the root): mini-batch K-Means
            sub = RowView(view.array, view.rows[m])
            c, _ = minibatch_kmeans(sub, b, epochs=cfg.kmeans_epochs,
                                    batch_size=cfg.kmeans_batch_size, seed=seed,
                                    init_rows=cfg.init_kmeans_rows, init_iters=cfg.kmeans_iters)
            c = torch.from_numpy(c)
            return c, assign(sub, c).numpy()
        c, labels = kmeans(torch.from_numpy(view[m]), b, iters=cfg.kmeans_iters, seed=seed)
        return c, labels.numpy()

    def _encode_chunk(self, x: torch.Tensor) -> np.ndarray:
        n = len(x)
        codes = np.zeros((n, len(self.offsets_)), dtype=np.int64)
        node = np.zeros(n, dtype=np.int64)
        for lvl, (off, cents) in enumerate(zip(self.offsets_, self.centroids_)):
            order = np.argsort(node, kind="stable")
            uniq, starts = np.unique(node[order], return_index=True)
            bounds = np.append(starts, n)
            for u, s, e in zip(uniq.tolist(), bounds[:-1].tolist(), bounds[1:].tolist()):
                rows = order[s:e]
                lo, hi = int(off[u]), int(off[u + 1])
                if hi - lo == 1:
                    best = np.zeros(len(rows), dtype=np.int64)
                else:
                    best = assign(x[rows], cents[lo:hi]).numpy()
                codes[rows, lvl] = best
                node[rows] = lo + best
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """The deepest tree centroid on each code path [n, M + 1] (an item's own embedding
        when its leaf holds one item)."""
        self._check_fitted()
        node = np.zeros(len(codes), dtype=np.int64)
        for lvl, off in enumerate(self.offsets_):
            node = off.numpy()[node] + np.asarray(codes)[:, lvl]
        return self.centroids_[-1][torch.from_numpy(node)].numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        out = {}
        for lvl, (off, c) in enumerate(zip(self.offsets_, self.centroids_)):
            out[f"hkmeans.{lvl}.offsets"] = off
            out[f"hkmeans.{lvl}.centroids"] = c
        return out

    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        depth = len(self.semantic_sizes_)
        self.offsets_ = [tensors[f"hkmeans.{lvl}.offsets"] for lvl in range(depth)]
        self.centroids_ = [tensors[f"hkmeans.{lvl}.centroids"].float() for lvl in range(depth)]
        for lvl in range(depth):
            if int(self.offsets_[lvl][-1]) != len(self.centroids_[lvl]) or (
                    lvl + 1 < depth and len(self.offsets_[lvl + 1]) != len(self.centroids_[lvl]) + 1):
                raise ValueError(f"hkmeans tree level {lvl} is inconsistent")


# ----------------------------------------------------------------------------- atomic, random


@register_scheme("atomic")
class AtomicScheme(IdScheme):
    """One token per item: no semantic level, the identifier is the unique counter alone."""

    def fit(self, embeddings: Any, *, corpus: Any = None, show_progress: bool = False) -> AtomicScheme:
        emb = _check_matrix(embeddings)
        self.config_ = self.config
        self.dim_ = int(emb.shape[1])
        self.semantic_sizes_ = []
        self.fit_info_ = {}
        return self

    def _encode_chunk(self, x: torch.Tensor) -> np.ndarray:
        return np.zeros((len(x), 0), dtype=np.int64)


@register_scheme("random")
class RandomScheme(IdScheme):
    """``M + 1`` pseudo-random tokens of ``random_code_size`` values: a keyed BLAKE2 hash of
    the float32 embedding bytes, so codes carry no semantics, yet encoding is deterministic
    (re-encoding an item gives its code back; identical embeddings collide, as they should)."""

    def fit(self, embeddings: Any, *, corpus: Any = None, show_progress: bool = False) -> RandomScheme:
        emb = _check_matrix(embeddings)
        size = self.config.random_code_size or self.config.codebook_size
        self.config_ = self.config.replace(random_code_size=size)
        self.dim_ = int(emb.shape[1])
        self.semantic_sizes_ = [size] * (self.config.num_fine_levels + 1)
        self.fit_info_ = {}
        return self

    def _encode_chunk(self, x: torch.Tensor) -> np.ndarray:
        levels = len(self.semantic_sizes_)
        key = int(self.config_.seed).to_bytes(8, "little", signed=True)
        arr = x.numpy()
        words = np.empty((len(arr), levels), dtype=np.uint64)
        for i, row in enumerate(arr):
            digest = hashlib.blake2b(row.tobytes(), digest_size=8 * levels, key=key).digest()
            words[i] = np.frombuffer(digest, dtype="<u8")
        return (words % np.uint64(self.semantic_sizes_[0])).astype(np.int64)
