"""The synthetic benchmark world: a corpus that needs no download, scales to millions of
items, behaves like cross-modal data and has a known accuracy ceiling.

Each item is a latent *scene*: a subject (49 categories in 9 super-categories), a count
(1-3), one or two attributes (colour, size, age), an action compatible with the subject, a
place (31), a time or weather (8), plus nuisance factors (lighting, viewpoint, style: 24
continuous dimensions by default) that no text ever mentions. Frequencies are skewed (Zipf),
like real data, and places depend on the subject (boats in harbours, rarely in kitchens).

Item embedding (:class:`World`): a fixed, seeded, nonlinear map of the scene,

    z = u0 + sum_f A_f[scene_f] + W2 . normalize(tanh(sum_f T_f[scene_f] + W1n n + b))
          + Wn n + noise,        embedding = z / |z|

with additive per-factor directions ``A_f`` (a category direction is its super-category's
direction plus an offset, so related categories are close), a random 2-layer MLP over the
factor embeddings and the nuisance vector ``n``, a linear nuisance term and isotropic
noise. Identical scenes with different nuisance have cosine ~0.7; sharing only the
category still beats sharing only the super-category, which beats nothing.

Text (:mod:`gcmr.corpus._synth_text`): 5 human queries per item (synonyms, varied word
order, 0-2 attributes left out, filler words, typos) and 2 formulaic captioner captions.

Oracle (:func:`match_counts`, :func:`oracle_metrics`): a query pins down only the items
whose scene agrees with every attribute it mentions; if ``m`` corpus items do (target
included), the best text-only retriever ranks them first in some order, so its expected
R@k is ``min(1, k / m)`` and its expected MRR@10 is ``(1/m) sum_{r<=min(m,10)} 1/r``.
``m`` is counted by hashing projected scene tuples, one sort per mention pattern, never
pairwise, so it scales to millions of items.

Determinism: item ``i``'s scene, nuisance and noise come from the generator of its block of
:data:`BLOCK` items (seeded by ``(seed, stream, block)``), its text from a generator seeded
by ``(seed, stream, i)``. Every block is computed at full size, so an item does not depend
on chunking or on ``num_items``: a bigger world extends a smaller one with the same seed
(only the split assignment changes). Files are byte-identical for the same seed and size on
the same machine (BLAS rounding may differ across CPUs).

Extra files (ignored by corpus readers): ``synth/scenes.npy`` int16 [N, 8] (the latent
factors, columns :data:`FACTORS`), ``synth/world.json`` (value names to decode them, the
config), ``synth/mentions_<split>.npy`` (each query's mention pattern) and
``synth/matches_<split>.npy`` (each query's ``m``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gcmr.artifacts import write_json
from gcmr.config import JsonConfig
from gcmr.corpus import _synth_text as T
from gcmr.corpus import _synth_vocab as V
from gcmr.corpus.format import CorpusWriter
from gcmr.errors import ConfigError

FACTORS = V.FACTORS
SUBJECT_AS_SUPER = T.SUBJECT_AS_SUPER
COUNT_AS_NUMBER = T.COUNT_AS_NUMBER
BLOCK = 4096  # items per generation block (part of the world's definition: do not change)
SPLITS = ("train", "val", "test")
SYNTH_VERSION = 1
ORACLE_KS = (1, 5, 10)

# random streams: (seed, stream, ...) seeds every generator
_WORLD, _SCENE, _EMBED, _SPLIT, _CAPTION, _QUERY = range(6)

# Squared norms of the embedding components before normalization (the difficulty knobs).
_W2 = {"cone": 0.12, "category": 0.24, "count": 0.03, "colour": 0.04, "size": 0.03,
       "age": 0.03, "action": 0.09, "place": 0.12, "time": 0.05, "mlp": 0.20,
       "nuisance": 0.14, "noise": 0.12}
_CATEGORY_SHARE = 0.5  # cos between categories of one super-category (their shared part)
_GROUP_SHARE = 0.3  # cos between places (times) of one group
_MLP_HIDDEN = 256
_FACTOR_EMB = 16  # MLP input embedding size per factor
_MLP_GAIN, _MLP_NUISANCE_GAIN = 1.5, 0.7  # std of pre-activations from scene / nuisance

_PLACE_GROUPS = (
    ("beach", "lake", "river", "harbor", "swamp", "island"),
    ("park", "forest", "field", "garden", "lawn", "jungle", "farm", "mountain", "picnic"),
    ("street", "city square", "highway", "parking lot", "market", "stadium", "village",
     "playground", "airport", "zoo"),
    ("kitchen", "living room", "restaurant", "office"),
    ("desert", "sky"),
)
_TIME_GROUPS = (("day", "sunrise", "sunset"), ("night", "storm"), ("rain", "snow", "fog"))
_SUPER_WEIGHTS = {"pets": 1.6, "wild animals": 0.8, "birds": 0.8, "people": 2.0,
                  "road vehicles": 1.2, "watercraft": 0.6, "aircraft": 0.6, "food": 1.0,
                  "buildings": 0.8}
_TIME_WEIGHTS = {"day": 0.35, "night": 0.15, "sunset": 0.12, "sunrise": 0.08, "rain": 0.1,
                 "snow": 0.08, "fog": 0.06, "storm": 0.06}
_COUNT_P = (0.6, 0.25, 0.15)
_TWO_ATTRIBUTES_P = 0.45
_PLACE_BOOST = 8.0  # preferred places of a super-category are this much more likely


@dataclass
class SynthConfig(JsonConfig):
    """Size and style of a synthetic world; saved in ``corpus.json`` under ``synth``."""

    num_items: int = 5000
    seed: int = 0
    dim: int = 1024
    dtype: str = "float32"
    queries_per_item: int = 5
    captions_per_item: int = 2
    typo_rate: float = 0.02  # per word of 4+ letters in human queries
    filler_rate: float = 0.15  # human queries with a filler prefix or suffix ("show me ...")
    hypernym_rate: float = 0.05  # human queries naming the super-category ("an animal")
    nuisance_dims: int = 24
    nuisance_scale: float = 1.0  # multiplies the nuisance term (and its MLP input)
    noise_scale: float = 1.0  # multiplies the isotropic noise
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    name: str = "synth"

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"SynthConfig.{field}: {why}, got {getattr(self, field)!r}")

        if self.num_items < 10:
            raise bad("num_items", "need at least 10 items (80/10/10 split)")
        if self.seed < 0:
            raise bad("seed", "must be >= 0")
        if self.dim < 8:
            raise bad("dim", "must be >= 8")
        if self.dtype not in ("float32", "float16"):
            raise bad("dtype", "must be float32 or float16")
        if self.queries_per_item < 1:
            raise bad("queries_per_item", "must be >= 1")
        if self.captions_per_item < 0:
            raise bad("captions_per_item", "must be >= 0")
        for name in ("typo_rate", "filler_rate", "hypernym_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must be in [0, 1]")
        if self.nuisance_dims < 1:
            raise bad("nuisance_dims", "must be >= 1")
        for name in ("nuisance_scale", "noise_scale"):
            if not getattr(self, name) >= 0.0:
                raise bad(name, "must be >= 0")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise bad(name, "must be in (0, 0.5)")
        if self.num_items * min(self.val_fraction, self.test_fraction) < 1:
            raise bad("num_items", "too few items for a non-empty val and test split")


# ----------------------------------------------------------------------------- scenes


def _zipf(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return w / w.sum()


def _scene_tables() -> dict[str, np.ndarray]:
    """Sampling distributions: category probabilities and, per super-category, cumulative
    distributions over actions, places and attribute values (rows sum to 1)."""
    cat_p = np.concatenate([_SUPER_WEIGHTS[s.name] * _zipf(len(s.categories), 0.8)
                            for s in V.SUPERS])
    n_super = len(V.SUPERS)

    def cdf(values: tuple[str, ...], members: list[tuple[str, ...]], exponent: float,
            base: np.ndarray | None = None) -> np.ndarray:
        out = np.zeros((n_super, len(values)))
        for s, names in enumerate(members):
            if base is None:
                idx = [values.index(n) for n in names]
                out[s, idx] = _zipf(len(idx), exponent) if idx else 0.0
            else:
                out[s] = base
                out[s, [values.index(n) for n in names]] *= _PLACE_BOOST
            if out[s].sum():
                out[s] /= out[s].sum()
        return np.cumsum(out, axis=1)

    place_base = _zipf(len(V.PLACE_NAMES), 0.5)
    return {
        "category": np.cumsum(cat_p / cat_p.sum()),
        "action": cdf(V.ACTION_NAMES, [s.actions for s in V.SUPERS], 0.7),
        "place": cdf(V.PLACE_NAMES, [s.places for s in V.SUPERS], 0.0, place_base),
        "time": np.cumsum([_TIME_WEIGHTS[t] for t in V.TIME_NAMES]),
        "colour": cdf(V.COLOUR_NAMES, [s.colours for s in V.SUPERS], 0.6),
        "size": cdf(V.SIZE_NAMES, [s.sizes for s in V.SUPERS], 0.6),
        "age": cdf(V.AGE_NAMES, [s.ages for s in V.SUPERS], 0.6),
        "super": np.asarray(V.SUPER_OF),
    }


_TABLES: dict[str, np.ndarray] | None = None


def _tables() -> dict[str, np.ndarray]:
    global _TABLES
    if _TABLES is None:
        _TABLES = _scene_tables()
    return _TABLES


def _inverse_cdf(u: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """Row-wise inverse-CDF sampling: ``cdf`` is [B, V] (or [V]), ``u`` is [B]."""
    if cdf.ndim == 1:
        return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
    return np.minimum((u[:, None] >= cdf).sum(axis=1), cdf.shape[1] - 1)


def _scene_block(seed: int, block: int) -> np.ndarray:
    """The scenes of one full block of :data:`BLOCK` items, int16 [BLOCK, 8]."""
    tab = _tables()
    rng = np.random.default_rng([seed, _SCENE, block])
    u = rng.random((BLOCK, 12))
    cat = _inverse_cdf(u[:, 0], tab["category"])
    sup = tab["super"][cat]
    out = np.zeros((BLOCK, len(FACTORS)), dtype=np.int16)
    out[:, V.CATEGORY] = cat
    out[:, V.COUNT] = 1 + _inverse_cdf(u[:, 1], np.cumsum(_COUNT_P))
    out[:, V.ACTION] = _inverse_cdf(u[:, 2], tab["action"][sup])
    out[:, V.PLACE] = _inverse_cdf(u[:, 3], tab["place"][sup])
    out[:, V.TIME] = _inverse_cdf(u[:, 4], tab["time"])
    # one or two attributes among the kinds the super-category allows
    kinds = (V.COLOUR, V.SIZE, V.AGE)
    allowed = np.stack([tab[V.FACTORS[k]][sup, -1] > 0 for k in kinds], axis=1)
    priority = np.where(allowed, u[:, 5:8], 2.0)
    rank = np.argsort(np.argsort(priority, axis=1, kind="stable"), axis=1, kind="stable")
    n_attr = 1 + (u[:, 8] < _TWO_ATTRIBUTES_P)
    chosen = allowed & (rank < n_attr[:, None])
    for j, k in enumerate(kinds):
        value = _inverse_cdf(u[:, 9 + j], tab[V.FACTORS[k]][sup])
        out[:, k] = np.where(chosen[:, j], value, 0)
    return out


def sample_scenes(seed: int, num_items: int) -> np.ndarray:
    """Latent scenes of items ``0 .. num_items - 1``: int16 [N, 8], columns :data:`FACTORS`
    (attribute value 0 = absent; count is 1..3). O(N) memory, 16 bytes per item."""
    out = np.empty((num_items, len(FACTORS)), dtype=np.int16)
    for b in range(math.ceil(num_items / BLOCK)):
        start = b * BLOCK
        out[start:start + BLOCK] = _scene_block(seed, b)[: num_items - start]
    return out


def describe_scene(scene: np.ndarray | list[int]) -> dict[str, str]:
    """Human-readable factor values of one scene row (empty string = attribute absent)."""
    row = [int(v) for v in scene]
    out = {name: V.FACTOR_VALUES[f][row[f]] for f, name in enumerate(FACTORS)}
    out["super_category"] = V.SUPERS[V.SUPER_OF[row[V.CATEGORY]]].name
    return out


# ----------------------------------------------------------------------------- embedding


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _grouped(rng: np.random.Generator, group_of: np.ndarray, d: int, share: float) -> np.ndarray:
    """Unit vectors whose members of one group share a common direction (cos ~ ``share``)."""
    common = _unit(rng, int(group_of.max()) + 1, d)
    own = _unit(rng, len(group_of), d)
    x = math.sqrt(share) * common[group_of] + math.sqrt(1 - share) * own
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _group_index(names: tuple[str, ...], groups: tuple[tuple[str, ...], ...]) -> np.ndarray:
    return np.array([next(g for g, members in enumerate(groups) if n in members)
                     for n in names])


class World:
    """The fixed, seeded map from scenes (+ nuisance, noise) to item embeddings.

    ``embed`` is a pure function of its inputs; the parameters depend only on ``seed``,
    ``dim`` and the nuisance settings.
    """

    def __init__(self, *, seed: int, dim: int, nuisance_dims: int = 24,
                 nuisance_scale: float = 1.0, noise_scale: float = 1.0) -> None:
        self.dim = dim
        self.nuisance_dims = nuisance_dims
        self.noise_weight = math.sqrt(_W2["noise"]) * noise_scale
        rng = np.random.default_rng([seed, _WORLD])
        sizes = [len(v) for v in V.FACTOR_VALUES]
        super_of = np.asarray(V.SUPER_OF)
        count_group = np.array([0, 1, 2, 2])  # 2 and 3 share a "plural" direction
        place_group = _group_index(V.PLACE_NAMES, _PLACE_GROUPS)
        time_group = _group_index(V.TIME_NAMES, _TIME_GROUPS)

        def directions(f: int, d: int) -> np.ndarray:
            if f == V.CATEGORY:
                return _grouped(rng, super_of, d, _CATEGORY_SHARE)
            if f == V.COUNT:
                return _grouped(rng, count_group, d, 0.5)
            if f == V.PLACE:
                return _grouped(rng, place_group, d, _GROUP_SHARE)
            if f == V.TIME:
                return _grouped(rng, time_group, d, _GROUP_SHARE)
            return _unit(rng, sizes[f], d)

        # additive terms: one direction per factor value, scaled; "absent" adds nothing
        additive = []
        for f, name in enumerate(FACTORS):
            a = directions(f, dim) * math.sqrt(_W2[name])
            if f in (V.COUNT, V.COLOUR, V.SIZE, V.AGE):
                a[0] = 0.0
            additive.append(a)
        # the MLP: factor embeddings (related values close, as above) -> tanh -> D
        w1 = []
        for f in range(len(FACTORS)):
            emb = directions(f, _FACTOR_EMB)
            w = rng.standard_normal((_FACTOR_EMB, _MLP_HIDDEN)) * _MLP_GAIN / math.sqrt(
                len(FACTORS))
            w1.append((emb @ w).astype(np.float32))  # [V_f, H]: embedding then layer 1
        self._pre_tables = w1
        self._w1n = (rng.standard_normal((nuisance_dims, _MLP_HIDDEN))
                     * _MLP_NUISANCE_GAIN * nuisance_scale / math.sqrt(nuisance_dims)
                     ).astype(np.float32)
        self._b1 = (rng.standard_normal(_MLP_HIDDEN) * 0.3).astype(np.float32)
        w2 = rng.standard_normal((_MLP_HIDDEN, dim)) * math.sqrt(_W2["mlp"] / dim)
        wn = rng.standard_normal((nuisance_dims, dim)) * math.sqrt(
            _W2["nuisance"] / (nuisance_dims * dim)) * nuisance_scale
        cone = _unit(rng, 1, dim) * math.sqrt(_W2["cone"])
        # one fused output layer over [h | one-hot(scene) | nuisance | 1]
        self._w_out = np.concatenate([w2, *additive, wn, cone]).astype(np.float32)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]) + _MLP_HIDDEN
        self._ones_col = _MLP_HIDDEN + sum(sizes) + nuisance_dims

    def embed(self, scenes: np.ndarray, nuisance: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """L2-normalized float32 embeddings [B, D] of ``scenes`` [B, 8] with ``nuisance``
        [B, nuisance_dims] ~ N(0, 1) and ``noise`` [B, D] ~ N(0, 1 / D)."""
        scenes = np.asarray(scenes, dtype=np.int64)
        b = scenes.shape[0]
        nuisance = np.asarray(nuisance, dtype=np.float32)
        pre = nuisance @ self._w1n + self._b1
        for f, table in enumerate(self._pre_tables):
            pre += table[scenes[:, f]]
        x = np.zeros((b, self._w_out.shape[0]), dtype=np.float32)
        h = np.tanh(pre)
        x[:, :_MLP_HIDDEN] = h / np.linalg.norm(h, axis=1, keepdims=True)
        rows = np.arange(b)[:, None]
        x[rows, self._offsets[None, :] + scenes] = 1.0
        x[:, self._ones_col - self.nuisance_dims:self._ones_col] = nuisance
        x[:, self._ones_col] = 1.0
        z = x @ self._w_out
        z += np.asarray(noise, dtype=np.float32) * np.float32(self.noise_weight)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        return z

    def embed_block(self, seed: int, block: int, scenes: np.ndarray) -> np.ndarray:
        """Embeddings of one full block: nuisance and noise drawn from the block's stream."""
        rng = np.random.default_rng([seed, _EMBED, block])
        nuisance = rng.standard_normal((len(scenes), self.nuisance_dims), dtype=np.float32)
        # uniform noise with the variance of N(0, 1/D): as isotropic as Gaussian noise for
        # cosines in high dimension, and 5x cheaper to draw
        noise = rng.random((len(scenes), self.dim), dtype=np.float32)
        noise -= np.float32(0.5)
        noise *= np.float32(math.sqrt(12.0 / self.dim))
        return self.embed(scenes, nuisance, noise)


def world_for(config: SynthConfig) -> World:
    return World(seed=config.seed, dim=config.dim, nuisance_dims=config.nuisance_dims,
                 nuisance_scale=config.nuisance_scale, noise_scale=config.noise_scale)


# ----------------------------------------------------------------------------- oracle


def _project(scenes: np.ndarray, pattern: int) -> np.ndarray:
    """One int64 key per scene from the factors a mention pattern pins down: two scenes
    get the same key iff no text with this pattern can tell them apart."""
    key = np.zeros(len(scenes), dtype=np.int64)
    for f, values in enumerate(V.FACTOR_VALUES):
        if not pattern >> f & 1:
            continue
        col = scenes[:, f].astype(np.int64)
        if f == V.CATEGORY and pattern & SUBJECT_AS_SUPER:
            col = np.asarray(V.SUPER_OF, dtype=np.int64)[col]
        elif f == V.COUNT and pattern & COUNT_AS_NUMBER:
            col = np.minimum(col, 2)  # singular or plural
        key = key * len(values) + col
    return key


def match_counts(scenes: np.ndarray, targets: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    """For each query (target row, mention pattern): how many items of ``scenes`` agree with
    every factor the query mentions, the target included. One sort per distinct pattern."""
    targets = np.asarray(targets, dtype=np.int64)
    patterns = np.asarray(patterns, dtype=np.int64)
    out = np.zeros(len(targets), dtype=np.int64)
    for p in np.unique(patterns):
        sel = np.flatnonzero(patterns == p)
        keys = _project(scenes, int(p))
        uniq, counts = np.unique(keys, return_counts=True)
        out[sel] = counts[np.searchsorted(uniq, keys[targets[sel]])]
    return out


def oracle_metrics(matches: np.ndarray) -> dict[str, float]:
    """Expected R@1/5/10 and MRR@10 of a perfect text-only retriever, given each query's
    number of indistinguishable candidates ``m`` (ties in random order)."""
    m = np.asarray(matches, dtype=np.float64)
    if m.size == 0:
        return {f"R@{k}": 0.0 for k in ORACLE_KS} | {"MRR@10": 0.0}
    out = {f"R@{k}": float(np.mean(np.minimum(1.0, k / m))) for k in ORACLE_KS}
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, 11))])  # H(j), j <= 10
    out["MRR@10"] = float(np.mean(harmonic[np.minimum(m, 10).astype(np.int64)] / m))
    return out


# ----------------------------------------------------------------------------- writing


def _item_rng(seed: int, stream: int, item: int) -> random.Random:
    return random.Random(((seed * 64 + stream) << 40) + item)


def item_id(i: int) -> str:
    return f"item-{i:07d}"


def assign_splits(config: SynthConfig) -> np.ndarray:
    """Split of each item (index into :data:`SPLITS`): a seeded permutation, exact sizes."""
    n = config.num_items
    n_val, n_test = int(n * config.val_fraction), int(n * config.test_fraction)
    perm = np.random.default_rng([config.seed, _SPLIT]).permutation(n)
    split = np.zeros(n, dtype=np.int8)
    split[perm[:n_val]] = 1
    split[perm[n_val:n_val + n_test]] = 2
    return split


def item_queries(config: SynthConfig, scene: np.ndarray, item: int) -> list[tuple[str, int]]:
    """The human queries of item ``item`` as (text, mention pattern) pairs."""
    return T.render_queries([int(v) for v in scene], _item_rng(config.seed, _QUERY, item),
                            config.queries_per_item, typo_rate=config.typo_rate,
                            filler_rate=config.filler_rate, hypernym_rate=config.hypernym_rate)


def item_captions(config: SynthConfig, scene: np.ndarray, item: int) -> list[str]:
    """The captioner's pseudo-queries of item ``item``."""
    return T.render_captions([int(v) for v in scene], _item_rng(config.seed, _CAPTION, item),
                             config.captions_per_item)


def _world_json(config: SynthConfig) -> dict[str, Any]:
    return {
        "synth_version": SYNTH_VERSION,
        "config": config.to_dict(),
        "factors": list(FACTORS),
        "values": {name: list(V.FACTOR_VALUES[f]) for f, name in enumerate(FACTORS)},
        "super_categories": [s.name for s in V.SUPERS],
        "super_of_category": list(V.SUPER_OF),
        "mention_bits": {**{name: 1 << f for f, name in enumerate(FACTORS)},
                         "subject_as_super": SUBJECT_AS_SUPER,
                         "count_as_number": COUNT_AS_NUMBER},
        "block": BLOCK,
    }


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def synthesize(out: str | Path, config: SynthConfig, overwrite: bool = False, *,
               show_progress: bool = True) -> dict[str, Any]:
    """Write a synthetic world to ``out`` (corpus format v1, atomically) and return a summary:
    items, dim, queries per split, the test oracle, disk size and seconds taken."""
    from gcmr.progress import progress

    t0 = time.perf_counter()
    out = Path(out)
    n = config.num_items
    scenes = sample_scenes(config.seed, n)
    split = assign_splits(config)
    world = world_for(config)
    n_blocks = math.ceil(n / BLOCK)
    patterns: dict[str, np.ndarray] = {}
    targets: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    with CorpusWriter(out, name=config.name, modality="image", embedding_dim=config.dim,
                      num_items=n, embedding_model=f"gcmr-synth-v{SYNTH_VERSION}",
                      dtype=config.dtype, overwrite=overwrite,
                      extra={"synth": config.to_dict(), "synth_version": SYNTH_VERSION}
                      ) as writer, progress(transient=True, disable=not show_progress) as bar:
        task = bar.add_task("items", total=n, info="embeddings + captions")
        for b in range(n_blocks):
            start, stop = b * BLOCK, min(n, (b + 1) * BLOCK)
            block_scenes = _scene_block(config.seed, b)
            emb = world.embed_block(config.seed, b, block_scenes)[: stop - start]
            ids = [item_id(i) for i in range(start, stop)]
            caps = [item_captions(config, scenes[i], i) for i in range(start, stop)]
            writer.add_items(ids, caps, emb)
            bar.advance(task, stop - start)
        for s, name in enumerate(SPLITS):
            members = np.flatnonzero(split == s)
            task = bar.add_task(f"queries {name}", total=len(members), info="")
            pats = np.zeros(len(members) * config.queries_per_item, dtype=np.int16)

            def gen(members: np.ndarray = members, pats: np.ndarray = pats,
                    task: Any = task) -> Iterator[dict[str, Any]]:
                j = 0
                for k, i in enumerate(members.tolist()):
                    relevant = [item_id(i)]
                    for text, pattern in item_queries(config, scenes[i], i):
                        pats[j] = pattern
                        j += 1
                        yield {"text": text, "relevant": relevant}
                    if k % 1024 == 1023:
                        bar.advance(task, 1024)

            counts[name] = writer.write_queries(name, gen())
            patterns[name] = pats
            targets[name] = np.repeat(members, config.queries_per_item)
        # the oracle: one pass over all queries of all splits
        all_m = match_counts(scenes, np.concatenate([targets[s] for s in SPLITS]),
                             np.concatenate([patterns[s] for s in SPLITS]))
        oracle, start = {}, 0
        synth_dir = writer.dir / "synth"
        synth_dir.mkdir()
        for name in SPLITS:
            m = all_m[start:start + len(targets[name])]
            start += len(m)
            oracle[name] = oracle_metrics(m)
            np.save(synth_dir / f"mentions_{name}.npy", patterns[name])
            np.save(synth_dir / f"matches_{name}.npy", m.astype(np.int32))
        writer.write_oracle(oracle)
        np.save(synth_dir / "scenes.npy", scenes)
        write_json(synth_dir / "world.json", _world_json(config))
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {"items": n, "dim": config.dim, "dtype": config.dtype,
                               "seed": config.seed}
    for s, name in enumerate(SPLITS):
        summary[f"{name} split"] = (f"{int((split == s).sum()):,} items, "
                                    f"{counts[name]:,} queries")
    summary["captions per item"] = config.captions_per_item
    for metric in ("R@1", "R@10", "MRR@10"):
        summary[f"oracle test {metric}"] = round(oracle["test"][metric], 4)
    summary["disk size"] = _human_bytes(_dir_size(out))
    summary["seconds"] = round(seconds, 2)
    return summary


def load_scenes(corpus: str | Path) -> np.ndarray:
    """The latent scenes [N, 8] of a synthetic corpus (``synth/scenes.npy``)."""
    from gcmr.errors import CorpusError

    path = Path(corpus) / "synth" / "scenes.npy"
    if not path.is_file():
        raise CorpusError(f"{path}: missing; is {corpus} a corpus written by `gcmr synth`?")
    return np.load(path, allow_pickle=False)
