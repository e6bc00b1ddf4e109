"""Query by example (gcmr.search.example): --like returns the item itself first and its
prefix neighbours, --vector of an item's own embedding equals --like of it, the prefix
ranges match a brute-force reference, mixed text + example queries, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from gcmr.errors import ConfigError
from gcmr.search.example import PrefixNeighbours
from gcmr.search.retriever import Retriever

N = 40  # items of the live_world fixture's training corpus (tests/search/conftest.py)


@pytest.fixture
def retriever(live_world) -> Retriever:
    return Retriever.load(live_world["model"], device="cpu")


def test_like_returns_the_item_first_then_its_prefix_neighbours(retriever) -> None:
    codes = retriever.index.codes
    for row in range(N):
        item = retriever.item_ids[row]
        scores, ids = retriever.search(like=item, k=5)
        assert ids[0, 0] == item and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
        assert (np.diff(scores[0]) <= 1e-6).all()
        rows = [retriever.item_ids.index(i) for i in ids[0]]
        # the candidates share the first code (the coarse cluster holds >= 5 items here)
        same = (codes[:, 0] == codes[row, 0]).sum()
        if same >= 5:
            assert (codes[rows, 0] == codes[row, 0]).all()


def test_vector_of_an_items_embedding_equals_like(retriever, live_world) -> None:
    emb = np.asarray(live_world["full"].embeddings[:N])
    ids = [retriever.item_ids[r] for r in range(0, N, 3)]
    s1, by_like = retriever.search(like=ids, k=6)
    s2, by_vector = retriever.search(vector=emb[0:N:3], k=6)
    assert (by_like == by_vector).all()
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    _, one = retriever.search(vector=emb[3], k=6)  # one vector [D]
    assert (one[0] == by_like[1]).all()


def test_without_embeddings_the_shared_prefix_ranks(retriever, live_world, tmp_path) -> None:
    import shutil

    moved = tmp_path / "corpus"
    shutil.copytree(live_world["corpus"], moved)
    (moved / "embeddings.npy").unlink()
    r = Retriever.load(live_world["model"], device="cpu", rerank="none", corpus_path=moved)
    scores, rows = r.search_rows(None, like="item0007", k=4)
    assert rows[0, 0] == 7 and scores[0, 0] == r.index.length - 1  # the whole semantic code
    assert (np.diff(scores[0]) <= 0).all()


def reference(codes, rows, semantic, d):
    return sorted(int(r) for r in rows if (codes[r, :d] == semantic[:d]).all())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prefix_ranges_match_a_brute_force_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = np.concatenate([rng.integers(0, 3, size=(200, 3)), np.zeros((200, 1), int)], 1)
    live = np.sort(rng.choice(200, 150, replace=False))
    nb = PrefixNeighbours(codes, live)
    for _ in range(20):
        semantic = rng.integers(0, 3, size=3)
        for d, (lo, hi) in enumerate(nb.ranges(semantic)):
            assert sorted(nb.rows[lo:hi].tolist()) == reference(codes, live, semantic, d)
        rows, depths = nb.candidates(semantic, k=5, expand_depth=1, max_candidates=30)
        assert len(set(rows.tolist())) == len(rows) <= 30 and set(rows) <= set(live)
        assert (np.diff(depths) <= 0).all()  # deeper prefixes first
        for r, d in zip(rows, depths):
            assert (codes[r, :d] == semantic[:d]).all()
        deepest = max(d for d in range(4) if reference(codes, live, semantic, d))
        assert set(reference(codes, live, semantic, deepest)) <= set(rows.tolist()) or \
            len(rows) == 30


def test_mixed_text_and_example(retriever) -> None:
    s, ids = retriever.search(["red 4", "gold 7"], like="item0004", k=5)
    assert ids.shape == (2, 5) and (np.diff(s, axis=1) <= 1e-6).all()
    _, only_example = retriever.search(["red 4"], like="item0004", k=1, example_weight=1.0)
    assert only_example[0, 0] == "item0004"
    s0, _ = retriever.search(["red 4"], like="item0004", k=3, example_weight=0.0)
    assert np.isfinite(s0).all()
    with pytest.raises(ConfigError, match="example_weight"):
        retriever.search(["red 4"], like="item0004", example_weight=2)
    with pytest.raises(ConfigError, match="needs hybrid search"):
        retriever.search(["red 4"], like="item0004", rerank="none")
    with pytest.raises(ConfigError, match="2 text queries but 3 examples"):
        retriever.search(["a", "b"], like=["item0001", "item0002", "item0003"])


def test_example_errors(retriever) -> None:
    with pytest.raises(ConfigError, match="unknown item id 'nope'"):
        retriever.search(like="nope")
    with pytest.raises(ConfigError, match="dimension 3, the model's items have 16"):
        retriever.search(vector=np.ones(3))
    with pytest.raises(ConfigError, match="NaN"):
        retriever.search(vector=np.full(16, np.nan))
    with pytest.raises(ConfigError, match="all zeros"):
        retriever.search(vector=np.zeros(16))
    with pytest.raises(ConfigError, match="not both"):
        retriever.search(like="item0001", vector=np.ones(16))
    with pytest.raises(ConfigError, match="candidates does not apply"):
        retriever.search(like="item0001", candidates=np.array([1, 2]))
