"""Identifier schemes: estimator-style objects that map item embeddings to semantic codes.

A scheme is fitted once (``fit(embeddings)`` sets trailing-underscore attributes) and then
``encode(embeddings) -> codes [n, S]`` maps any embeddings, old or new, to ``S`` level-local
semantic codes; ``semantic_sizes_[l]`` is the size of level ``l``. The unique counter that
makes identifiers distinct is not part of a scheme: :mod:`gcmr.ids.index` appends it.

Schemes (CART section 3.2 and its ablations):

- ``cart``    coarse K-Means token + ``M`` RQ-VAE tokens on the residual to the centroid
  (``fine_quantizer = kmeans``: greedy residual k-means instead, additive codes;
  ``text_rank = r``: all of it on a text-predictable projection ``x @ V`` of the embeddings)
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
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from gcmr.errors import ArtifactError, ConfigError, CorpusError, GcmrError
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
    k, c = sizes_for(num_items, cfg.fine_levels)
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


def corpus_captions(corpus: Any) -> list[list[str]]:
    """The captions of every corpus item; a corpus loaded with ``load_captions=False`` (as
    ``gcmr index`` loads it) has them read now, and must not have changed meanwhile."""
    try:
        return corpus.captions
    except CorpusError:
        from gcmr.corpus import load_corpus

        full = load_corpus(corpus.path, load_captions=True, check_finite=False)
        if full.fingerprint != getattr(corpus, "fingerprint", full.fingerprint):
            raise CorpusError(f"{corpus.path}: the corpus changed while indexing") from None
        return full.captions


def reduced_rank_ridge(t: np.ndarray, x: Any, rank: int, *, chunk: int = 16384
                       ) -> tuple[np.ndarray, np.ndarray, float]:
    """Reduced-rank ridge regression of ``x`` [n, D] on text features ``t`` [n, s]:
    ``(V [D, rank] float32, singular values of F, lambda)``.

    ``B = (T^T T + lam I)^-1 T^T X`` with ``lam = 0.1 * mean(diag(T^T T))``, fitted values
    ``F = T B``; ``V`` = the first ``rank`` right singular vectors of ``F``: the directions
    of the embeddings that the text predicts best (Izenman 1975). ``F`` [n, D] is never
    formed: with ``T^T T = Q diag(w) Q^T``, ``F^T F = M^T M`` for the small
    ``M = diag(sqrt w) Q^T B`` [s, D], so the SVD of ``M`` has ``F``'s singular values and
    right singular vectors. ``x`` is read in chunks of ``chunk`` rows (a memmap or
    :class:`RowView` is fine); each column of ``V`` has its largest entry positive.
    """
    t64 = np.asarray(t, dtype=np.float64)
    gram = t64.T @ t64
    lam = 0.1 * float(np.mean(np.diag(gram)))
    if not lam > 0:
        raise ConfigError("text features are all zero: no caption text to project on")
    txx = np.zeros((t64.shape[1], x.shape[1]), dtype=np.float64)
    for start in range(0, len(t64), chunk):
        block = np.asarray(x[start:start + chunk], dtype=np.float64)
        txx += t64[start:start + len(block)].T @ block
    b = np.linalg.solve(gram + lam * np.eye(len(gram)), txx)
    w, q = np.linalg.eigh(gram)
    m = np.sqrt(np.clip(w, 0.0, None))[:, None] * (q.T @ b)
    _, sigma, vt = np.linalg.svd(m, full_matrices=False)
    v = vt[:rank].T
    v *= np.where(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])] < 0, -1.0, 1.0)
    return np.ascontiguousarray(v, dtype=np.float32), sigma, lam


def fit_text_projection(embeddings: Any, rows: np.ndarray, corpus: Any, rank: int, *,
                        seed: int, captions: list[list[str]] | None = None
                        ) -> tuple[np.ndarray, dict[str, Any]]:
    """``(V [D, r], info)``: the ``r <= rank`` directions of ``embeddings`` that the caption
    text of the fit sample ``rows`` predicts best (:func:`reduced_rank_ridge` on TF-IDF
    unigrams + bigrams of each item's captions, reduced to ``s <= 512`` dense features by a
    truncated SVD). Items without captions are left out of the regression. ``r`` is adapted
    down to ``min(D, s)`` with a note; ``info`` is what ``fit_info_["text_projection"]``
    records. ``captions``: the corpus's captions when the caller has read them already."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    t0 = time.perf_counter()
    if corpus is None:
        raise ConfigError("index option text_rank needs the corpus captions, but the scheme "
                          "was fitted without a corpus (fit(embeddings, corpus=...))")
    where = getattr(corpus, "path", "corpus")
    if len(corpus) != len(embeddings):
        raise ConfigError(f"{where}: {len(corpus)} items but {len(embeddings)} embedding rows")
    if captions is None:
        captions = corpus_captions(corpus)
    texts, with_text = [], []
    for row in np.asarray(rows).tolist():
        caps = [c for c in captions[row] if c.strip()]
        if caps:
            texts.append(" ".join(caps))
            with_text.append(row)
    if len(texts) < max(rank, 2):
        raise ConfigError(f"{where}: text_rank = {rank} needs at least {max(rank, 2)} items "
                          f"with captions in the fit sample, found {len(texts)}")
    try:
        tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2).fit_transform(texts)
    except ValueError as exc:  # no term in two or more items
        raise ConfigError(f"{where}: the captions have no word shared by two items, so "
                          f"text_rank has nothing to project on ({exc})") from exc
    vocab = int(tfidf.shape[1])
    s = min(512, vocab - 1, len(texts) - 1)
    if s < 1:
        raise ConfigError(f"{where}: the captions have {vocab} word(s) shared by two items; "
                          f"text_rank needs at least 2")
    t = TruncatedSVD(n_components=s, random_state=seed).fit_transform(tfidf).astype(np.float32)
    dim = int(embeddings.shape[1])
    r = min(rank, dim, s)
    if r < rank:
        note(f"text_rank={rank} is more than the embedding dimension {dim} or the {s} text "
             f"features allow; using {r}")
    v, sigma, lam = reduced_rank_ridge(t, RowView(embeddings, np.asarray(with_text)), r)
    energy = float(np.sum(sigma ** 2))
    info = {"rank": r, "features": s, "vocabulary": vocab, "items_with_captions": len(texts),
            "lambda": lam, "explained": float(np.sum(sigma[:r] ** 2)) / energy if energy else 0.0,
            "seconds": round(time.perf_counter() - t0, 3)}
    return v, info


def auto_text_rank(captions: list[list[str]] | None, rows: np.ndarray, *,
                   where: Any = "corpus") -> int:
    """``text_rank = None``: :data:`~gcmr.ids.config.AUTO_TEXT_RANK` when at least half of
    the fit sample ``rows`` has a caption, else 0 (with a note: the identifiers are then
    fitted on the raw embeddings, CART's way). ``captions`` None (no corpus, or another
    ``fit_view``): 0."""
    from gcmr.ids.config import AUTO_TEXT_RANK

    if captions is None:
        return 0
    with_text = sum(1 for row in np.asarray(rows).tolist()
                    if any(c.strip() for c in captions[row]))
    if with_text * 2 < len(rows) or with_text < max(AUTO_TEXT_RANK, 2):
        note(f"{where}: {with_text} of {len(rows)} sampled items "
             f"have captions, too few for the text projection; identifiers are fitted on the "
             f"raw embeddings (text_rank 0)")
        return 0
    return AUTO_TEXT_RANK


class _ResidualRows:
    """Rows of ``base`` minus their coarse centroid and the codewords chosen so far: the
    input of fine level ``len(codes)``, computed on demand (bounded memory)."""

    def __init__(self, base: Any, centroids: np.ndarray, coarse: np.ndarray,
                 codebooks: list[np.ndarray], codes: list[np.ndarray]) -> None:
        self.base, self.centroids, self.coarse = base, centroids, coarse
        self.codebooks, self.codes = codebooks, codes
        self.shape = (len(base), centroids.shape[1])

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: Any) -> np.ndarray:
        out = np.asarray(self.base[idx], dtype=np.float32) - self.centroids[self.coarse[idx]]
        for book, code in zip(self.codebooks, self.codes):
            out -= book[code[idx]]
        return out


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
    residual ``embedding - centroid``.

    Two options change the recipe (``rqvae`` with ``text_rank`` 0 is CART as published; the
    defaults are residual k-means on the text projection when the items have captions):

    - ``fine_quantizer = "kmeans"``: the ``M`` fine levels are greedy residual k-means
      (level ``l`` clusters what the coarse centroid and levels ``< l`` left over), so codes
      are additive: ``decode(codes) = centroids[c0] + sum_l codebooks[l][c_l]``;
    - ``text_rank = r > 0``: everything is fitted and encoded on ``x @ V``, ``V`` [D, r] the
      directions of the embeddings that the items' caption text predicts best
      (:func:`fit_text_projection`; needs ``fit(..., corpus=...)``). :meth:`encode` still
      takes raw embeddings (``dim_`` is the raw D) and projects them first.
    """

    def fit(self, embeddings: Any, *, corpus: Any = None, show_progress: bool = False) -> CartScheme:
        emb = _check_matrix(embeddings)
        cfg = self.config
        rows = fit_rows(len(emb), cfg.max_fit_items, cfg.seed)
        view = RowView(emb, rows)
        text_info = None
        self.projection_: torch.Tensor | None = None
        rank = cfg.text_rank
        auto = rank is None
        captions = None  # read once for both the auto choice and the projection
        if auto:  # on when the fit sample has captions
            if corpus is not None and cfg.fit_view == "embeddings":
                captions = corpus_captions(corpus)
            rank = auto_text_rank(captions, rows, where=getattr(corpus, "path", "corpus"))
        v = None
        if rank:
            try:
                v, text_info = fit_text_projection(emb, rows, corpus, rank, seed=cfg.seed,
                                                   captions=captions)
            except ConfigError as exc:
                if not auto:
                    raise
                note(f"no text projection ({exc}); identifiers are fitted on the raw "
                     f"embeddings (text_rank 0)")
                rank = 0
        if v is not None:
            rank = text_info["rank"]
            self.projection_ = torch.from_numpy(v)
            projected = np.empty((len(rows), rank), dtype=np.float32)
            for start, chunk in iter_chunks(view, cfg.encode_batch_size):
                projected[start:start + len(chunk)] = (chunk @ self.projection_).numpy()
            view = RowView(projected, np.arange(len(rows)))
        k, c, rule = rule_sizes(cfg, len(emb))
        k = adapt_size(k, len(rows), "num_clusters", "items")
        c = adapt_size(c, len(rows), "codebook_size", "residuals")
        self.config_ = cfg.replace(num_clusters=k, codebook_size=c, text_rank=rank,
                                   num_fine_levels=cfg.fine_levels)
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
        self.dim_ = int(emb.shape[1])
        if cfg.additive:
            self.codebooks_, fine_info = self._fit_fine_kmeans(view, labels.numpy(), c,
                                                               show_progress=show_progress)
            fine = {"fine_kmeans": fine_info}
        else:
            def batch_of(idx: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(view[idx]) - self.centroids_[labels[idx]]

            self.rqvae_, rq_info = _fit_rqvae(self.config_, dim=self._space_dim,
                                              num_levels=cfg.fine_levels, codebook_size=c,
                                              batch_of=batch_of, num_rows=len(rows),
                                              show_progress=show_progress)
            fine = {"rqvae": rq_info}
        self.fit_info_ = {"fit_items": len(rows), "kmeans": km_info, **fine,
                          **({"size_rule": rule} if rule else {}),
                          **({"text_projection": text_info} if text_info else {})}
        self.semantic_sizes_ = [k] + [c] * cfg.fine_levels
        return self

    def _fit_fine_kmeans(self, view: RowView, coarse: np.ndarray, size: int, *,
                         show_progress: bool) -> tuple[list[torch.Tensor], list[dict]]:
        """Greedy residual k-means: fine level ``l`` (0-based) runs :func:`minibatch_kmeans`
        (the coarse K-Means options, seed ``seed + l + 1``) with ``size`` centers on the
        residual of the levels before it, assigns and subtracts."""
        cfg = self.config
        centroids = self.centroids_.numpy()
        books: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        info: list[dict] = []
        batch = min(max(cfg.kmeans_batch_size, size), len(view))
        steps = cfg.kmeans_epochs * -(-len(view) // batch) * cfg.fine_levels
        with progress_task(show_progress, "residual K-Means", steps) as update:
            for lvl in range(cfg.fine_levels):
                residual = _ResidualRows(view, centroids, coarse, books, codes)
                done = lvl * steps // cfg.fine_levels
                book, lvl_info = minibatch_kmeans(residual, size, epochs=cfg.kmeans_epochs,
                                                  batch_size=cfg.kmeans_batch_size,
                                                  seed=cfg.seed + lvl + 1,
                                                  init_rows=cfg.init_kmeans_rows,
                                                  init_iters=cfg.kmeans_iters,
                                                  on_step=lambda d, t, o=done: update(o + d))
                book_t = torch.from_numpy(book)
                code = assign(residual, book_t).numpy()
                lvl_info["inertia_per_item"] = _inertia(residual, book_t, torch.from_numpy(code))
                lvl_info["codes_used"] = len(np.unique(code))
                books.append(book)
                codes.append(code)
                info.append(lvl_info)
        return [torch.from_numpy(b) for b in books], info

    @property
    def _space_dim(self) -> int:
        """Dimension of the space the codes live in: ``text_rank`` when projected, else D."""
        return self.config_.text_rank or self.dim_

    @property
    def _additive(self) -> bool:
        return self.config_.additive

    @torch.no_grad()
    def _encode_chunk(self, x: torch.Tensor) -> np.ndarray:
        if self.projection_ is not None:
            x = x @ self.projection_
        coarse = assign(x, self.centroids_)
        residual = x - self.centroids_[coarse]
        if not self._additive:
            fine = self.rqvae_.encode(residual)
            return torch.cat([coarse.unsqueeze(1), fine], dim=1).numpy()
        codes = [coarse]
        for book in self.codebooks_:
            code = assign(residual, book)
            residual = residual - book[code]
            codes.append(code)
        return torch.stack(codes, dim=1).numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Approximate embeddings of semantic codes [n, 1 + M]: centroid + decoded residual
        (``fine_quantizer = kmeans``: + one codeword per level). With ``text_rank`` > 0 the
        vectors are in the projected space [n, text_rank] (``x @ V``), not the raw one."""
        self._check_fitted()
        codes = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        out = self.centroids_[codes[:, 0]].clone()
        if self._additive:
            for lvl, book in enumerate(self.codebooks_):
                out += book[codes[:, lvl + 1]]
            return out.numpy()
        z_q = self.rqvae_.decode_latent(codes[:, 1:])
        return (out + self.rqvae_.decode(z_q)).numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        if self._additive:
            fine = {f"fine.codebooks.{lvl}": book for lvl, book in enumerate(self.codebooks_)}
        else:
            fine = _rq_state(self.rqvae_)
        text = {"text.projection": self.projection_} if self.projection_ is not None else {}
        return {"coarse.centroids": self.centroids_, **fine, **text}

    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        cfg = self.config_
        self.projection_ = None
        if cfg.text_rank:
            self.projection_ = tensors["text.projection"].float()
            if tuple(self.projection_.shape) != (self.dim_, cfg.text_rank):
                raise ValueError(f"text.projection has shape {tuple(self.projection_.shape)}, "
                                 f"expected {(self.dim_, cfg.text_rank)}")
        self.centroids_ = tensors["coarse.centroids"].float()
        if tuple(self.centroids_.shape) != (self.semantic_sizes_[0], self._space_dim):
            raise ValueError(f"coarse.centroids has shape {tuple(self.centroids_.shape)}")
        levels = len(self.semantic_sizes_) - 1
        if self._additive:
            self.codebooks_ = [tensors[f"fine.codebooks.{lvl}"].float() for lvl in range(levels)]
            for lvl, book in enumerate(self.codebooks_):
                if tuple(book.shape) != (self.semantic_sizes_[lvl + 1], self._space_dim):
                    raise ValueError(f"fine.codebooks.{lvl} has shape {tuple(book.shape)}")
            return
        self.rqvae_ = _rq_from_state(tensors, cfg, self._space_dim, levels,
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
        levels = cfg.fine_levels + 1
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
        depth = cfg.fine_levels + 1
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
        self.semantic_sizes_ = [size] * (self.config.fine_levels + 1)
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
