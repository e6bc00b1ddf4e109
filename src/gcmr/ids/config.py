"""Configuration of an identifier index (``gcmr index``), saved in the index manifest, and
which of its fields each built-in scheme reads.

:class:`IndexConfig` stays one flat record on disk (every index directory holds all fields),
but a scheme reads only some of them: :data:`COMMON_FIELDS` plus :data:`SCHEME_FIELDS` of
its name. :func:`check_scheme_options` refuses options set for a scheme that ignores them
(``gcmr index --vokens 4 --scheme cart``). Torch-free (the CLI reads it for its help texts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gcmr.config import JsonConfig
from gcmr.errors import ConfigError

# CART's fine levels: its RQ-VAE (as published) or greedy residual k-means (additive codes)
FINE_QUANTIZERS = ("rqvae", "kmeans")
# text_rank = None (auto) with captions: 64 directions (chosen by an offline check on the 5k
# world before the option existed, not a committed benchmark: the <q, x_hat> ceiling with a
# dense tower's q was 0.59 for 64 vs 0.53 for 128 directions)
AUTO_TEXT_RANK = 64
# what an index saved before text_rank / fine_quantizer existed was built with
LEGACY_FIELDS = {"text_rank": 0, "fine_quantizer": "rqvae"}
# fields every scheme (or build_index itself) reads
COMMON_FIELDS = frozenset({"scheme", "encode_batch_size", "seed", "device"})
# the RQ-VAE recipe (gcmr.ids.rqvae: eq. 1, k-means codebook init, dead-code restarts)
_RQVAE = ("latent_dim", "hidden_dims", "epochs", "max_steps", "batch_size", "lr",
          "warmup_steps", "alpha", "beta", "restart_interval", "restart_threshold",
          "init_kmeans_rows", "kmeans_iters")
# the RQ-VAE-only ones (init_kmeans_rows and kmeans_iters also seed the K-Means)
RQVAE_FIELDS = frozenset(_RQVAE) - {"init_kmeans_rows", "kmeans_iters"}
# what the identifiers are fitted on (gcmr.ids.views); text_encoder embeds captions for it
_VIEW = ("fit_view", "text_encoder")
# mini-batch K-Means (the coarse token; hkmeans's large nodes)
_KMEANS = ("kmeans_epochs", "kmeans_batch_size", "init_kmeans_rows", "kmeans_iters")
# CART's variants: a text-predictable projection of the embeddings, the fine quantizer
_CART = ("text_rank", "fine_quantizer")
# what each built-in scheme reads besides COMMON_FIELDS (gcmr.ids.schemes, gcmr.ids.avg);
# a scheme registered elsewhere is not listed and may read any field
SCHEME_FIELDS: dict[str, frozenset[str]] = {
    "cart": frozenset({"num_clusters", "codebook_size", "num_fine_levels", "max_fit_items",
                       *_KMEANS, *_RQVAE, *_VIEW, *_CART}),
    "rq": frozenset({"codebook_size", "num_fine_levels", "max_fit_items", *_RQVAE, *_VIEW}),
    "hkmeans": frozenset({"num_clusters", "hkmeans_branching", "num_fine_levels",
                          "max_fit_items", *_KMEANS, *_VIEW}),
    "atomic": frozenset(),
    "random": frozenset({"codebook_size", "random_code_size", "num_fine_levels"}),
    "avg": frozenset({"voken_length", "voken_codebook_size", "shared_codebook", "align_weight",
                      "text_encoder", "max_fit_items", *_RQVAE}),
}


def schemes_using(name: str) -> list[str]:
    """The built-in schemes that read the IndexConfig field ``name`` (all for a common one)."""
    if name in COMMON_FIELDS:
        return list(SCHEME_FIELDS)
    return [scheme for scheme, fields in SCHEME_FIELDS.items() if name in fields]


def check_scheme_options(scheme: str, fields: Iterable[str], *,
                         names: Mapping[str, str] | None = None) -> None:
    """Refuse options that ``scheme`` does not read: raise :class:`ConfigError` naming the
    first such field (as ``names[field]``, e.g. the CLI flag, when given) and the schemes that
    use it. A scheme registered outside :data:`SCHEME_FIELDS` is not checked."""
    if scheme not in SCHEME_FIELDS:
        return
    used = COMMON_FIELDS | SCHEME_FIELDS[scheme]
    names = names or {}
    for name in fields:
        if name in used:
            continue
        users = schemes_using(name)
        label = names.get(name, f"index option {name}")
        where = f"used by {', '.join(users)}" if users else "used by no built-in scheme"
        raise ConfigError(f"{label} does not apply to --scheme {scheme} ({where})")


@dataclass
class IndexConfig(JsonConfig):
    """How identifiers are built. Sizes that cannot fit the data are adapted at build time
    (with a note) and the adapted values are what the saved manifest holds.

    CART (section 3.2, appendix C): a coarse K-Means token, ``num_fine_levels`` RQ-VAE tokens
    on the residual ``embedding - centroid``, then a unique counter. ``text_rank``,
    ``fine_quantizer`` and ``num_fine_levels`` (cart) change that recipe: CART as published is
    ``rqvae`` with ``text_rank`` 0 and 2 fine levels (what an index saved before the first two
    existed gets on load, :data:`LEGACY_FIELDS`); the defaults are 3 levels of residual
    K-Means on the text projection.
    """

    scheme: str = "cart"  # cart | rq | hkmeans | atomic | random | avg (see gcmr.ids.SCHEMES)
    # --- sizes
    # K: coarse K-Means clusters (cart); 0 = from N (gcmr.ids.schemes.sizes_for, cart only)
    num_clusters: int = 128
    # vectors per RQ codebook (one codebook per fine level); 0 = from N (cart only)
    codebook_size: int = 128
    # M: fine levels after the coarse token (rq uses M + 1 levels); None = auto (fine_levels):
    # 3 for CART with residual K-Means (additive identifiers: the <q, x_hat> ceiling rises from
    # 0.540 / 0.218 with 2 levels to 0.615 / 0.376 at 5k / 100k items, trained pure generation
    # at 5k 0.5445 vs 0.537; benchmarks/results/additive_sizes, additive/levels3), else CART's 2
    num_fine_levels: int | None = None
    latent_dim: int = 64  # RQ-VAE latent / codebook vector dimension
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])  # MLP encoder widths
    # --- coarse K-Means (scikit-learn MiniBatchKMeans, fed batch by batch)
    kmeans_epochs: int = 10  # passes over the fit rows
    kmeans_batch_size: int = 4096
    # --- RQ-VAE training (eq. 1: reconstruction + alpha * (codebook + beta * commitment))
    epochs: int = 20  # passes over the fit rows, capped by max_steps
    max_steps: int = 400  # optimizer step cap (0 = no cap); bounds time on large corpora
    batch_size: int = 512
    lr: float = 3e-3  # peak Adam learning rate (1e-2 collapsed the latent on the synthetic world)
    warmup_steps: int = 50  # linear warm-up, then inverse-square-root decay
    alpha: float = 1.0  # weight of the quantization loss against reconstruction
    beta: float = 0.25  # commitment weight inside the quantization loss
    restart_interval: int = 10  # steps between dead-code restarts (0 = never)
    restart_threshold: int = 1  # a code used fewer times than this in the window is dead
    init_kmeans_rows: int = 8192  # rows used for the k-means init of each codebook
    kmeans_iters: int = 20  # Lloyd iterations of the pure k-means (codebook init, hkmeans)
    # --- other schemes
    hkmeans_branching: int = 0  # hkmeans branching factor b (0 = num_clusters)
    random_code_size: int = 0  # random scheme: codes per position (0 = codebook_size)
    # --- avg (AVG aligned voken tokenizer, gcmr.ids.avg; defaults from AVG tables 4-5)
    voken_length: int = 4  # M: vokens per item (residual quantization steps)
    # N: vectors in the voken codebook; 0 = from the number of items (sqrt N as a power of
    # two in [16, 1024], gcmr.ids.schemes.sqrt_size; AVG's 1024 at 1M items and more)
    voken_codebook_size: int = 0
    # one codebook for all M steps (the AVG paper) or one per step (the default: at 5k items
    # and 64 entries, val R@1 0.192 vs 0.142 shared; benchmarks/results/avg)
    shared_codebook: bool = False
    align_weight: float = 1.0  # weight of the cross-modal alignment loss (0 = "w/o alignment")
    # caption encoder when the corpus has no caption_embeddings.npy (AVG; fit_view captions)
    text_encoder: str = "minilm"
    # --- what identifiers are fitted on (gcmr.ids.views): embeddings (CART) | captions (the
    # items' caption text vectors: identifiers text can predict) | joint (both, concatenated)
    fit_view: str = field(default="embeddings",
                          metadata={"choices": ("embeddings", "captions", "joint")})
    # --- cart variants (gcmr.ids.schemes.CartScheme): identifiers text can predict, additively
    # r > 0: fit and encode on x @ V, V [D, r] the r directions of the embeddings that the
    # items' caption text (TF-IDF, reduced-rank ridge regression) predicts best; 0 = off (CART
    # as published); None = auto: AUTO_TEXT_RANK when at least half of the fit sample has
    # captions and fit_view is embeddings, else 0 (the resolved value is what is saved)
    text_rank: int | None = None
    # the fine levels: kmeans (greedy residual k-means: additive codes, decode = centroid +
    # one codeword per level; the default since code vectors) | rqvae (CART's RQ-VAE on the
    # residual, as published). Measured on the 5k world (benchmarks/results/additive): the
    # two together lift pure generation R@1 from 0.23 to 0.54 at the bench budget
    fine_quantizer: str = field(default="kmeans", metadata={"choices": FINE_QUANTIZERS})
    # --- scale
    max_fit_items: int = 200_000  # fit on a seeded subsample of at most this many rows
    encode_batch_size: int = 16384  # rows per chunk when encoding every item
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def additive(self) -> bool:
        """CART with residual K-Means fine levels: an item's codes sum to a reconstruction of
        it (what code vectors need)."""
        return self.scheme == "cart" and self.fine_quantizer == "kmeans"

    @property
    def fine_levels(self) -> int:
        """``num_fine_levels``, or its default when None: 3 for additive identifiers, 2
        otherwise (CART's M)."""
        if self.num_fine_levels is not None:
            return self.num_fine_levels
        return 3 if self.additive else 2

    def check_options(self, fields: Iterable[str], *,
                      names: Mapping[str, str] | None = None) -> None:
        """Refuse options set (``fields``) that this config's scheme does not read; see
        :func:`check_scheme_options`."""
        check_scheme_options(self.scheme, fields, names=names)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first option with an impossible value."""
        positive = ("num_fine_levels", "latent_dim",
                    "kmeans_epochs", "kmeans_batch_size", "epochs", "batch_size",
                    "restart_threshold", "init_kmeans_rows", "kmeans_iters", "max_fit_items",
                    "encode_batch_size", "voken_length")
        for name in positive:
            value = getattr(self, name)
            if value is None and name == "num_fine_levels":  # auto: fine_levels
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"index option {name} must be a whole number >= 1, got {value!r}")
        for name in ("max_steps", "warmup_steps", "restart_interval", "hkmeans_branching",
                     "random_code_size", "num_clusters", "codebook_size",
                     "voken_codebook_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"index option {name} must be a whole number >= 0, got {value!r}")
        if not self.hidden_dims or any(int(h) < 1 for h in self.hidden_dims):
            raise ConfigError(f"index option hidden_dims must be a non-empty list of widths >= 1, "
                              f"got {self.hidden_dims!r}")
        for name in ("lr", "alpha", "beta"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"index option {name} must be > 0, got {value!r}")
        if isinstance(self.align_weight, bool) or not isinstance(self.align_weight, (int, float)) \
                or not self.align_weight >= 0:
            raise ConfigError(f"index option align_weight must be >= 0, got {self.align_weight!r}")
        if not isinstance(self.text_encoder, str) or not self.text_encoder:
            raise ConfigError(f"index option text_encoder must be an encoder spec such as "
                              f"'minilm', got {self.text_encoder!r}")
        if (self.num_clusters == 0 or self.codebook_size == 0) and self.scheme != "cart":
            raise ConfigError(f"index option num_clusters / codebook_size 0 (sizes from N) "
                              f"applies to --scheme cart only, not {self.scheme!r}")
        if self.hkmeans_branching == 1:
            raise ConfigError("index option hkmeans_branching must be >= 2 (or 0 = num_clusters)")
        if self.fit_view not in ("embeddings", "captions", "joint"):
            raise ConfigError(f"index option fit_view must be embeddings, captions or joint, "
                              f"got {self.fit_view!r}")
        if not isinstance(self.scheme, str) or not self.scheme:
            raise ConfigError(f"index option scheme must be a scheme name, got {self.scheme!r}")
        if self.fine_quantizer not in FINE_QUANTIZERS:
            raise ConfigError(f"index option fine_quantizer must be one of "
                              f"{', '.join(FINE_QUANTIZERS)}, got {self.fine_quantizer!r}")
        rank = self.text_rank
        if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 0):
            raise ConfigError(f"index option text_rank must be a whole number >= 0 or null "
                              f"(auto), got {rank!r}")
        if self.text_rank and self.scheme != "cart":
            raise ConfigError(f"index option text_rank applies to --scheme cart only, not "
                              f"{self.scheme!r}")
        if self.text_rank and self.fit_view != "embeddings":
            raise ConfigError(f"index option text_rank projects the embeddings, so it needs "
                              f"fit_view embeddings, not {self.fit_view!r} (one view at a time)")
