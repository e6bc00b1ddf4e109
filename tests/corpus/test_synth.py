"""The synthetic world: determinism, format, splits, semantic geometry, text and the oracle."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from gcmr.cli import main
from gcmr.corpus import _synth_vocab as V
from gcmr.corpus import load_corpus
from gcmr.corpus.synth import (
    COUNT_AS_NUMBER,
    SPLITS,
    SUBJECT_AS_SUPER,
    SynthConfig,
    World,
    describe_scene,
    load_scenes,
    match_counts,
    oracle_metrics,
    sample_scenes,
    synthesize,
)
from gcmr.errors import ConfigError, GcmrError
from gcmr.evaluate.metrics import mrr_at_k, recall_at_k

SUPER_OF = np.asarray(V.SUPER_OF)


def _write(path: Path, **kwargs) -> Path:
    config = SynthConfig(**{"num_items": 300, "dim": 32, "seed": 3, **kwargs})
    synthesize(path, config, show_progress=False)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """600 items, dim 48, no typos: the text can be checked word by word."""
    return _write(tmp_path_factory.mktemp("synth") / "w", num_items=600, dim=48, typo_rate=0.0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _queries(root: Path, split: str) -> list[dict]:
    lines = (root / "queries" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _brute_force_m(scenes: np.ndarray, target: int, pattern: int) -> int:
    """Items agreeing with every factor the pattern mentions, by a plain loop."""
    t = scenes[target]
    m = 0
    for s in scenes:
        ok = True
        for f in range(len(V.FACTORS)):
            if not pattern & (1 << f):
                continue
            if f == V.CATEGORY and pattern & SUBJECT_AS_SUPER:
                ok = SUPER_OF[s[f]] == SUPER_OF[t[f]]
            elif f == V.COUNT and pattern & COUNT_AS_NUMBER:
                ok = (s[f] > 1) == (t[f] > 1)
            else:
                ok = s[f] == t[f]
            if not ok:
                break
        m += ok
    return m


# ----------------------------------------------------------------------------- files


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = _files(_write(tmp_path / "a"))
    b = _files(_write(tmp_path / "b"))
    assert a == b
    c = _files(_write(tmp_path / "c", seed=4))
    assert set(c) == set(a)
    for name in ("embeddings.npy", "items.jsonl", "queries/test.jsonl", "synth/scenes.npy"):
        assert c[name] != a[name], name


def test_bigger_world_extends_smaller_one(tmp_path):
    small = load_corpus(_write(tmp_path / "s", num_items=120))
    big = load_corpus(_write(tmp_path / "b", num_items=300))
    assert big.ids[:120] == small.ids
    assert big.captions[:120] == small.captions
    np.testing.assert_array_equal(big.embeddings[:120], small.embeddings)
    np.testing.assert_array_equal(load_scenes(big.path)[:120], load_scenes(small.path))


def test_loads_as_valid_corpus_with_splits_by_item(world):
    corpus = load_corpus(world)
    assert len(corpus) == 600 and corpus.dim == 48
    assert corpus.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(corpus.embeddings, axis=1), 1.0, atol=1e-5)
    assert all(len(c) == 2 for c in corpus.captions)
    assert corpus.splits == sorted(SPLITS)
    owner: dict[str, str] = {}
    per_item: dict[str, int] = {}
    for split in SPLITS:
        for q in corpus.split(split):
            assert q.text.strip() and len(q.relevant) == 1
            (item,) = q.relevant
            assert owner.setdefault(item, split) == split  # no item in two splits
            per_item[item] = per_item.get(item, 0) + 1
    sizes = {s: sum(1 for v in owner.values() if v == s) for s in SPLITS}
    assert sizes == {"train": 480, "val": 60, "test": 60}
    assert set(per_item) == set(corpus.ids)  # every item has queries ...
    assert set(per_item.values()) == {5}  # ... five of them
    assert set(corpus.oracle) == set(SPLITS)


def test_queries_and_captions_differ_in_style(world):
    corpus = load_corpus(world)
    captions = [c for caps in corpus.captions for c in caps]
    queries = [q.text for s in SPLITS for q in corpus.split(s)]
    assert all(c.endswith(".") for c in captions)
    assert not any(q.endswith(".") for q in queries)
    assert len(set(captions) & set(queries)) == 0
    by_item: dict[str, set[str]] = {}
    for s in SPLITS:
        for q in corpus.split(s):
            by_item.setdefault(q.relevant[0], set()).add(q.text)
    distinct = np.mean([len(t) == 5 for t in by_item.values()])
    assert distinct > 0.99
    # humans use more varied words than the captioner
    assert len({w for q in queries for w in q.split()}) > len({w for c in captions
                                                                for w in c.split()})


def test_refuses_existing_output_and_bad_config(tmp_path):
    out = _write(tmp_path / "w", num_items=50)
    with pytest.raises(GcmrError, match="already exists"):
        synthesize(out, SynthConfig(num_items=50, dim=32), show_progress=False)
    synthesize(out, SynthConfig(num_items=60, dim=32), overwrite=True, show_progress=False)
    assert len(load_corpus(out)) == 60
    for bad in ({"num_items": 5}, {"dim": 2}, {"dtype": "int8"}, {"typo_rate": 1.5},
                {"seed": -1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            SynthConfig(**bad)
    config = SynthConfig(num_items=77, typo_rate=0.1)
    assert SynthConfig.from_dict(json.loads(config.to_json())) == config


def test_float16(tmp_path):
    corpus = load_corpus(_write(tmp_path / "w", num_items=40, dtype="float16"))
    assert corpus.embeddings.dtype == np.float16


# ----------------------------------------------------------------------------- vocabulary


def test_vocabulary_size_and_synonyms():
    assert len(V.SUPERS) >= 8 and len(V.CATEGORY_NAMES) >= 40
    assert len(V.PLACES) >= 25 and len(V.TIMES) >= 6
    assert all(len(nouns) >= 2 for nouns in V.CATEGORY_NOUNS)
    assert all(len(forms) >= 2 for forms in V.ACTIONS.values())
    assert all(len(p.nouns) >= 2 for p in V.PLACES.values())
    for s in V.SUPERS:
        assert s.actions and all(a in V.ACTIONS for a in s.actions), s.name
        assert all(p in V.PLACES for p in s.places), s.name
    # a surface form never names two values of one factor
    tables = [[{n.singular for n in nouns} for nouns in V.CATEGORY_NOUNS],
              [set(f) for f in V.ACTIONS.values()],
              [set(p.nouns) for p in V.PLACES.values()],
              [set(t.phrases) | set(t.keywords) for t in V.TIMES.values()],
              *[[set(f) for f in table.values()] for table in V.ATTRIBUTE_FORMS],
              [{n.singular for n in s.hypernyms} for s in V.SUPERS]]
    for table in tables:
        forms = [f for value in table for f in value]
        assert len(forms) == len(set(forms)), sorted(f for f in forms if forms.count(f) > 1)


def _has(text: str, forms) -> bool:
    return any(re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text) for f in forms)


def _forms(f: int, value: int) -> list[str]:
    name = V.FACTOR_VALUES[f][value]
    if f == V.CATEGORY:
        return [w for n in V.CATEGORY_NOUNS[value] for w in (n.singular, n.plural)]
    if f == V.ACTION:
        return list(V.ACTIONS[name])
    if f == V.PLACE:
        return list(V.PLACES[name].nouns)
    if f == V.TIME:
        return list(V.TIMES[name].phrases + V.TIMES[name].keywords)
    return list(V.ATTRIBUTE_FORMS[f - V.COLOUR][name])


def test_query_text_says_exactly_what_its_mention_pattern_says(world):
    """The oracle is computed from mention patterns, so a query must name every factor its
    pattern marks and none of the target's other factors."""
    scenes = load_scenes(world)
    row_of = {f"item-{i:07d}": i for i in range(len(scenes))}
    checked = 0
    for split in SPLITS:
        mentions = np.load(world / "synth" / f"mentions_{split}.npy")
        for q, pattern in zip(_queries(world, split), mentions.tolist(), strict=True):
            text, scene = q["text"].lower(), scenes[row_of[q["relevant"][0]]]
            assert pattern & (1 << V.CATEGORY) and pattern & (1 << V.COUNT)
            for f in (V.CATEGORY, V.COLOUR, V.SIZE, V.AGE, V.ACTION, V.PLACE, V.TIME):
                if f in (V.COLOUR, V.SIZE, V.AGE) and not scene[f]:
                    assert not pattern & (1 << f)  # an absent attribute is never mentioned
                    continue
                said = _has(text, _forms(f, scene[f]))
                if f == V.CATEGORY and pattern & SUBJECT_AS_SUPER:
                    hyper = V.SUPERS[SUPER_OF[scene[f]]].hypernyms
                    assert not said and _has(text, [h.singular for h in hyper] +
                                             [h.plural for h in hyper]), text
                else:
                    assert said == bool(pattern & (1 << f)), (text, V.FACTORS[f], pattern)
            numbers = [w for c in (2, 3) for w in V.COUNT_WORDS_HUMAN[c]]
            if pattern & COUNT_AS_NUMBER or scene[V.COUNT] == 1:
                assert not _has(text, numbers), text
            else:
                assert _has(text, V.COUNT_WORDS_HUMAN[scene[V.COUNT]]), text
            checked += 1
    assert checked == 3000


def test_typo_rate_is_roughly_respected(tmp_path):
    clean = _write(tmp_path / "clean", num_items=400, typo_rate=0.0)
    typed = _write(tmp_path / "typed", num_items=400, typo_rate=0.1)
    eligible = changed = 0
    for split in SPLITS:
        for a, b in zip(_queries(clean, split), _queries(typed, split), strict=True):
            wa, wb = a["text"].split(), b["text"].split()
            assert len(wa) == len(wb)  # typos change letters, never the words' count
            for x, y in zip(wa, wb, strict=True):
                if len(x) >= 4 and x.isalpha():
                    eligible += 1
                    changed += x.lower() != y.lower()
                else:
                    assert x == y
    assert 0.07 < changed / eligible < 0.11  # a few typos are refused: they spell real words


# ----------------------------------------------------------------------------- geometry


def _embed(world: World, scenes: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(scenes)
    return world.embed(scenes, rng.standard_normal((n, world.nuisance_dims)),
                       rng.standard_normal((n, world.dim)) / np.sqrt(world.dim))


def _shared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    eq = a == b
    eq[:, [V.COLOUR, V.SIZE, V.AGE]] &= a[:, [V.COLOUR, V.SIZE, V.AGE]] > 0
    return eq.sum(axis=1)


def test_cosine_falls_with_fewer_shared_factors():
    scenes = sample_scenes(5, 1500)
    emb = _embed(World(seed=5, dim=128), scenes, 0)
    i, j = np.triu_indices(len(scenes), 1)
    cos = (emb @ emb.T)[i, j]
    shared = _shared(scenes[i], scenes[j])
    means = [cos[shared == k].mean() for k in range(6)]
    assert all((shared == k).sum() > 100 for k in range(6))
    assert all(a < b for a, b in itertools.pairwise(means)), means


@pytest.mark.parametrize("dim", [128, 1024])
def test_identical_scenes_differ_by_nuisance(dim):
    world = World(seed=1, dim=dim)
    scenes = sample_scenes(1, 30)
    for s in scenes[:10]:
        emb = _embed(world, np.repeat(s[None], 12, axis=0), int(s.sum()))
        cos = (emb @ emb.T)[np.triu_indices(12, 1)]
        assert 0.6 < cos.mean() < 0.85, (describe_scene(s), cos.mean())


def test_category_beats_super_category_beats_nothing():
    """Pairs that share only the category, only the super-category, or nothing at all."""
    world = World(seed=2, dim=256)
    base = sample_scenes(2, 800)
    other = sample_scenes(9, 800)
    # `other` rows that share no factor with `base`, then with base's category / a sibling
    keep = _shared(base, other) == 0
    a, b = base[keep], other[keep].copy()
    same_super = SUPER_OF[a[:, 0]] == SUPER_OF[b[:, 0]]
    cat = b.copy()
    cat[:, V.CATEGORY] = a[:, V.CATEGORY]
    ea = _embed(world, a, 0)
    cos_none = np.einsum("nd,nd->n", ea, _embed(world, b, 1))
    cos_cat = np.einsum("nd,nd->n", ea, _embed(world, cat, 1))
    # (the action stays compatible with the other subject: the map does not care)
    assert cos_cat.mean() > cos_none[same_super].mean() + 0.05
    assert cos_none[same_super].mean() > cos_none[~same_super].mean() + 0.05


def test_kmeans_clusters_are_meaningful_but_not_the_categories():
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    scenes = sample_scenes(0, 2000)
    emb = _embed(World(seed=0, dim=128), scenes, 0)
    labels = KMeans(len(V.CATEGORY_NAMES), n_init=1, random_state=0).fit_predict(emb)
    nmi = normalized_mutual_info_score(scenes[:, V.CATEGORY], labels)
    assert 0.5 < nmi < 0.97


# ----------------------------------------------------------------------------- oracle


def test_oracle_matches_brute_force_on_a_tiny_world(tmp_path):
    root = _write(tmp_path / "tiny", num_items=80, dim=16)
    scenes = load_scenes(root)
    oracle = json.loads((root / "oracle.json").read_text())
    for split in SPLITS:
        queries = _queries(root, split)
        mentions = np.load(root / "synth" / f"mentions_{split}.npy").tolist()
        matches = np.load(root / "synth" / f"matches_{split}.npy")
        targets = [int(q["relevant"][0].split("-")[1]) for q in queries]
        brute = np.array([_brute_force_m(scenes, t, p)
                          for t, p in zip(targets, mentions, strict=True)])
        np.testing.assert_array_equal(matches, brute)
        expect = {
            **{f"R@{k}": np.mean([min(1.0, k / m) for m in brute]) for k in (1, 5, 10)},
            "MRR@10": np.mean([sum(1 / r for r in range(1, min(m, 10) + 1)) / m
                               for m in brute]),
        }
        assert oracle[split] == pytest.approx(expect, abs=1e-12)
        values = oracle[split]
        assert 0 <= values["R@1"] <= values["R@5"] <= values["R@10"] <= 1
        assert values["R@1"] <= values["MRR@10"] <= values["R@10"]


def test_oracle_formula_equals_a_simulated_perfect_retriever():
    """Rank the m indistinguishable items first in random order: the mean metrics over many
    shuffles approach the closed form."""
    rng = np.random.default_rng(0)
    matches = np.array([1, 2, 3, 7, 12, 30, 1, 4])
    ranked = []
    for _ in range(4000):
        for m in matches:
            order = rng.permutation(m)[:10]  # row 0 is the target among m tied items
            ranked.append(np.pad(order, (0, 10 - len(order)), constant_values=-1))
    ranked = np.stack(ranked)
    relevant = [[0]] * len(ranked)
    expect = oracle_metrics(matches)
    for k in (1, 5, 10):
        assert recall_at_k(ranked, relevant, k) == pytest.approx(expect[f"R@{k}"], abs=0.01)
    assert mrr_at_k(ranked, relevant, 10) == pytest.approx(expect["MRR@10"], abs=0.01)


def test_match_counts_against_brute_force_on_random_patterns():
    rng = np.random.default_rng(1)
    scenes = sample_scenes(4, 400)
    targets = rng.integers(0, 400, size=300)
    base = (1 << V.CATEGORY) | (1 << V.COUNT)
    patterns = base | rng.integers(0, 1 << (len(V.FACTORS) + 2), size=300)
    got = match_counts(scenes, targets, patterns)
    brute = [_brute_force_m(scenes, int(t), int(p)) for t, p in zip(targets, patterns, strict=True)]
    np.testing.assert_array_equal(got, brute)
    assert (got >= 1).all()


def test_oracle_falls_as_the_world_grows(tmp_path):
    small = json.loads((_write(tmp_path / "s", num_items=200).joinpath("oracle.json"))
                       .read_text())
    big = json.loads((_write(tmp_path / "b", num_items=3000, dim=8).joinpath("oracle.json"))
                     .read_text())
    assert big["train"]["R@1"] < small["train"]["R@1"]


# ----------------------------------------------------------------------------- CLI


def test_cli_synth_then_validate(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--items", "150", "--dim", "24", "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    assert "oracle test R@1" in printed and "150" in printed
    assert main(["validate", str(out)]) == 0
    assert load_corpus(out).meta.extra["synth"]["seed"] == 7
    assert main(["synth", str(out), "--items", "150"]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err


def test_cli_synth_config_file(tmp_path):
    from gcmr.corpus import load_corpus
    from gcmr.corpus.synth import SynthConfig

    cfg = tmp_path / "synth.json"
    cfg.write_text(SynthConfig(num_items=120, dim=16, queries_per_item=2).to_json())
    assert main(["synth", str(tmp_path / "w"), "--config", str(cfg), "--seed", "3"]) == 0
    corpus = load_corpus(tmp_path / "w")
    assert len(corpus) == 120 and corpus.dim == 16
    assert len(corpus.split("train")) == 2 * 96
    cfg.write_text('{"num_items": 10, "typo": 1}')
    assert main(["synth", str(tmp_path / "x"), "--config", str(cfg)]) == 2
