"""Hybrid search: beam candidates reranked by the generative model's own query vector."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gcmr.errors import ArtifactError, ConfigError
from gcmr.evaluate.runner import choose_fusion_weight
from gcmr.ids.trie import Trie
from gcmr.model import GenerativeRetrievalModel, ModelConfig
from gcmr.search.rerank import ItemVectors, RerankConfig, fuse, rank
from gcmr.search.retriever import Retriever, search_candidates, search_rows

SIZES = [4, 3, 5]
D = 8


class IdTokenizer:
    """Queries are space-separated token ids (enough to drive the model in tests)."""

    pad_id = 0

    def encode_batch(self, texts):
        rows = [[int(t) for t in text.split()] for text in texts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        return ids, ids != 0


def setup(n: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), -1).reshape(-1, 3)
    codes = grid[rng.choice(len(grid), n, replace=False)]
    model = GenerativeRetrievalModel(ModelConfig(vocab_size=40, level_sizes=SIZES, d_model=16,
                                                 n_heads=2, d_ff=32, query_dim=D, seed=seed))
    items = rng.normal(size=(n, D)).astype(np.float32)
    texts = [" ".join(str(t) for t in rng.integers(1, 40, size=5)) for _ in range(6)]
    return model.eval(), Trie.build(codes, SIZES), items, texts


def test_a_candidate_list_as_large_as_the_corpus_gives_the_dense_ranking() -> None:
    model, trie, items, texts = setup()
    tok = IdTokenizer()
    n = len(items)
    scores, rows = search_rows(model, tok, trie, texts, k=10, beam=n,
                               item_vectors=ItemVectors(items), logprob_weight=0.0)
    ids, mask = tok.encode_batch(texts)
    with torch.no_grad():
        q = model.query_vectors(model.encode(ids, mask)).numpy()
    x = items / np.linalg.norm(items, axis=1, keepdims=True)
    dense = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(rows, dense)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, dense, axis=1), atol=1e-5)


def test_weight_zero_reorders_only_the_beams_candidates_and_pure_generation_is_unchanged():
    model, trie, items, texts = setup()
    tok = IdTokenizer()
    gen_scores, gen_rows = search_rows(model, tok, trie, texts, k=5, beam=5)
    logp, cand, cos = search_candidates(model, tok, trie, texts, k=5, beam=5,
                                        item_vectors=ItemVectors(items))
    assert np.array_equal(cand, gen_rows) and np.allclose(logp, gen_scores)
    _, hyb = search_rows(model, tok, trie, texts, k=5, beam=5, item_vectors=ItemVectors(items))
    assert all(set(a) == set(b) for a, b in zip(hyb, gen_rows))  # same items, cosine order
    assert np.all(np.diff(np.take_along_axis(cos, np.argsort(-cos, axis=1), 1), axis=1) <= 0)
    # a huge weight on the log-probability gives the generation order back
    _, back = search_rows(model, tok, trie, texts, k=5, beam=5, item_vectors=ItemVectors(items),
                          logprob_weight=1e6)
    assert np.array_equal(back, gen_rows)


def test_fuse_and_rank_pad_and_keep_padding_last() -> None:
    cos = np.array([[0.1, 0.9, -np.inf]], dtype=np.float32)
    logp = np.array([[-1.0, -3.0, -np.inf]], dtype=np.float32)
    rows = np.array([[7, 3, -1]])
    s, r = rank(fuse(cos, logp, 0.0), rows, 4)
    assert r.tolist() == [[3, 7, -1, -1]] and np.isinf(s[0, 2:]).all()
    _, r = rank(fuse(cos, logp, 1.0), rows, 2)  # 0.1 - 1 = -0.9 beats 0.9 - 3 = -2.1
    assert r.tolist() == [[7, 3]]


def test_choose_fusion_weight_picks_what_the_validation_queries_reward() -> None:
    cos = np.array([[0.9, 0.1], [0.9, 0.1]], dtype=np.float32)
    logp = np.array([[-5.0, -0.1], [-5.0, -0.1]], dtype=np.float32)
    rows = np.array([[0, 1], [2, 3]])
    # the relevant items are the generation's favourites: only a large weight finds them
    w, table = choose_fusion_weight(cos, logp, rows, [np.array([1]), np.array([3])],
                                    metric="R@1", weights=(0.0, 0.05, 1.0))
    assert w == 1.0 and table == {"0": 0.0, "0.05": 0.0, "1": 1.0}
    w, _ = choose_fusion_weight(cos, logp, rows, [np.array([0]), np.array([2])], metric="R@1",
                                weights=(0.0, 1.0))
    assert w == 0.0


def test_rerank_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="rerank must be one of"):
        RerankConfig(mode="dense")
    with pytest.raises(ConfigError, match="logprob_weight"):
        RerankConfig(logprob_weight=-1.0)


@pytest.fixture(scope="module")
def hybrid_model(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny CART model trained with the query head on the committed legacy corpus/index."""
    from gcmr.train import TrainConfig, train

    root = tmp_path_factory.mktemp("hybrid")
    legacy = Path(__file__).parents[1] / "fixtures" / "legacy_v0_1"
    shutil.copytree(legacy / "corpus", root / "corpus")
    from gcmr.corpus import load_corpus
    from gcmr.ids import IndexConfig, build_index

    index = build_index(load_corpus(root / "corpus"),
                        IndexConfig(num_clusters=3, codebook_size=4, latent_dim=4,
                                    hidden_dims=[8], epochs=1, max_steps=4, batch_size=8),
                        show_progress=False).save(root / "index")
    cfg = TrainConfig(epochs=2, batch_size=8, vocab_size=60, val_split="test",
                      max_val_queries=8, val_beam=3, dense_weight=1.0)
    train(index, root / "model", config=cfg, show_progress=False,
          model_options={"d_model": 16, "n_heads": 2, "d_ff": 32, "encoder_layers": 1,
                         "decoder_layers": 1})
    return root / "model", root / "corpus"


def test_trained_head_model_searches_hybrid_by_default(hybrid_model) -> None:
    model_dir, _ = hybrid_model
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["model_config"]["query_dim"] == 8 and manifest["loss"]["dense_weight"] == 1.0
    saved = manifest["rerank"]
    assert saved["mode"] == "hybrid" and saved["chosen_on"] == "test"
    assert set(saved["by_weight"]) and saved["logprob_weight"] in [float(w) for w in
                                                                  saved["by_weight"]]
    log = [json.loads(x) for x in (model_dir / "train_log.jsonl").read_text().splitlines()]
    assert "nce" in log[0] and "gen_R@1" in log[0]["val"] and "R@1" in log[0]["val"]
    r = Retriever.load(model_dir, device="cpu")
    assert r.rerank.mode == "hybrid" and r.item_vectors is not None
    _, hybrid = r.search(["red 3", "gold item 7"], k=3)
    _, pure = r.search(["red 3", "gold item 7"], k=3, rerank="none")
    assert hybrid.shape == pure.shape == (2, 3)


def test_pure_generation_needs_no_corpus_and_hybrid_fails_clearly(hybrid_model,
                                                                 tmp_path: Path) -> None:
    model_dir, corpus = hybrid_model
    moved = tmp_path / "corpus"
    shutil.copytree(corpus, moved)
    (moved / "embeddings.npy").unlink()
    r = Retriever.load(model_dir, device="cpu", rerank="none", corpus_path=moved)
    assert r.item_vectors is None and r.search("red 3", k=2)[1].shape == (1, 2)
    with pytest.raises(ConfigError, match="hybrid search needs"):
        r.search("red 3", k=2, rerank="hybrid")
    with pytest.raises(Exception, match="embeddings.npy: missing"):
        Retriever.load(model_dir, device="cpu", corpus_path=moved)
    np.save(moved / "embeddings.npy", np.zeros((5, 8), dtype=np.float32))
    with pytest.raises(ArtifactError, match="is this the right corpus"):
        Retriever.load(model_dir, device="cpu", corpus_path=moved)


def test_a_model_without_a_head_refuses_hybrid(tmp_path: Path) -> None:
    legacy = Path(__file__).parents[1] / "fixtures" / "legacy_v0_1"
    shutil.copytree(legacy, tmp_path / "legacy")
    root = tmp_path / "legacy"
    r = Retriever.load(root / "model", index_path=root / "index", device="cpu")
    assert r.rerank.mode == "none"  # old models search as they always did
    with pytest.raises(ConfigError, match="query-vector head"):
        Retriever.load(root / "model", index_path=root / "index", device="cpu", rerank="hybrid")


def test_prefix_expansion_adds_the_items_under_the_beams_prefixes() -> None:
    from gcmr.search.rerank import PrefixExpander

    codes = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0], [1, 2, 0], [2, 0, 0]])
    exp = PrefixExpander(codes, [3, 3, 1], depth=1)
    rows = np.array([[3, 5, -1]])
    logp = np.array([[-1.0, -2.0, -np.inf]], dtype=np.float32)
    r, s = exp.expand(rows, logp, max_candidates=5)
    # the beam's items first, then the rest of item 3's cluster (1), then item 5's (2: none)
    assert r.tolist() == [[3, 5, 2, 4, -1]]
    assert s[0, :4].tolist() == [-1.0, -2.0, -1.0, -1.0] and np.isinf(s[0, 4])
    r, _ = exp.expand(rows, logp, max_candidates=3)  # bounded
    assert r.tolist() == [[3, 5, 2]]
    with pytest.raises(ConfigError, match="expansion depth"):
        PrefixExpander(codes, [3, 3, 1], depth=3)


def test_expansion_to_the_whole_corpus_gives_the_dense_ranking() -> None:
    from gcmr.search.rerank import PrefixExpander

    model, trie, items, texts = setup()
    tok = IdTokenizer()
    codes = np.array([[int(c) for c in row] for row in _codes_of(trie)])
    # depth 1 with a bound of N: the beam's clusters; with every cluster in the beam (beam
    # as wide as the coarse level) the list is the whole corpus
    exp = PrefixExpander(codes, SIZES, depth=1)
    _, rows = search_rows(model, tok, trie, texts, k=10, beam=len(items),
                          item_vectors=ItemVectors(items), expander=exp,
                          max_candidates=len(items))
    ids, mask = tok.encode_batch(texts)
    with torch.no_grad():
        q = model.query_vectors(model.encode(ids, mask)).numpy()
    x = items / np.linalg.norm(items, axis=1, keepdims=True)
    assert np.array_equal(rows, np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10])


def _codes_of(trie: Trie) -> list[list[int]]:
    """Every identifier of the trie, in item-row order (walks the CSR levels)."""
    paths = {0: []}
    for lvl in range(trie.num_levels):
        nxt = {}
        offsets, tokens, targets = (t.numpy() for t in (trie.offsets[lvl], trie.tokens[lvl],
                                                        trie.targets[lvl]))
        for node, path in paths.items():
            for e in range(offsets[node], offsets[node + 1]):
                nxt[int(targets[e])] = [*path, int(tokens[e])]
        paths = nxt
    return [paths[row] for row in sorted(paths)]


def _reference_expand(exp, rows, logprobs, max_candidates):
    """The expansion rule written as a plain loop (the vectorized one must equal it)."""
    q, w = rows.shape
    width = max(max_candidates, w)
    out_rows = np.full((q, width), -1, dtype=np.int64)
    out_logp = np.full((q, width), -np.inf, dtype=np.float32)
    for i in range(q):
        picked = [int(r) for r in rows[i] if r >= 0]
        scores = [float(s) for r, s in zip(rows[i], logprobs[i]) if r >= 0]
        seen, done = set(picked), set()
        for j in range(w):
            if rows[i, j] < 0:
                continue
            key = int(exp._keys[rows[i, j]])
            if key in done:
                continue
            done.add(key)
            lo, hi = np.searchsorted(exp.sorted_keys, [key, key + 1])
            for member in exp.order[lo:hi]:
                if len(picked) >= width:
                    break
                if int(member) not in seen:
                    seen.add(int(member))
                    picked.append(int(member))
                    scores.append(float(logprobs[i, j]))
        if len(exp.order) <= width and picked:  # a corpus no larger than the list: all join
            floor = float(min(s for r, s in zip(rows[i], logprobs[i]) if r >= 0))
            for member in exp.order:
                if int(member) not in seen:
                    seen.add(int(member))
                    picked.append(int(member))
                    scores.append(floor)
        out_rows[i, :len(picked)] = picked[:width]
        out_logp[i, :len(scores)] = scores[:width]
    return out_rows, out_logp


@pytest.mark.parametrize("seed", range(6))
def test_prefix_expansion_equals_the_reference_loop(seed: int) -> None:
    from gcmr.search.rerank import PrefixExpander

    rng = np.random.default_rng(seed)
    n, sizes = 300, [6, 5, 4, 7]
    codes = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    depth = int(rng.integers(1, 3))
    exp = PrefixExpander(codes, sizes, depth=depth)
    q, w = 17, int(rng.integers(1, 9))
    rows = np.stack([rng.choice(n, w, replace=False) for _ in range(q)])
    rows[rng.random((q, w)) < 0.2] = -1  # padding, also in the middle
    logp = np.where(rows >= 0, -rng.random((q, w)) * 5, -np.inf).astype(np.float32)
    for cap in (1, w, 10, 40, 299, 300, 400):  # 300 and up: every item is a candidate
        got = exp.expand(rows, logp, cap)
        ref = _reference_expand(exp, rows, logp, cap)
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1]), cap
        if cap >= n:  # a list with any beam item holds the whole corpus, each item once
            full = (rows >= 0).any(axis=1)
            assert all(sorted(r) == list(range(n)) for r in got[0][full][:, :n])
    live = np.sort(rng.choice(n, 120, replace=False))  # deleted items never join
    exp_live = PrefixExpander(codes, sizes, depth=depth, rows=live)
    got = exp_live.expand(np.where(np.isin(rows, live), rows, -1), logp, 150)
    assert set(got[0][got[0] >= 0].tolist()) <= set(live.tolist())
    assert ((got[0] >= 0).sum(axis=1)[np.isin(rows, live).any(axis=1)] == 120).all()


def test_blended_vectors_weigh_both_scores() -> None:
    """A blend scores a candidate by (1 - w) * media cosine + w * best caption cosine, with
    -inf padding kept; w must lie strictly between 0 and 1."""
    from gcmr.errors import ConfigError
    from gcmr.search.rerank import BlendedVectors, CaptionVectors, ItemVectors, RerankConfig

    rng = np.random.default_rng(0)
    items = rng.normal(size=(5, 4)).astype(np.float32)
    caps = rng.normal(size=(7, 3)).astype(np.float32)
    caps /= np.linalg.norm(caps, axis=1, keepdims=True)
    media, text = ItemVectors(items), CaptionVectors(caps, np.array([0, 2, 3, 5, 6, 7]))
    blend = BlendedVectors(media, text, 0.25)
    q = (torch.nn.functional.normalize(torch.randn(2, 4), dim=-1),
         torch.nn.functional.normalize(torch.randn(2, 3), dim=-1))
    rows = np.array([[0, 3, -1], [4, 1, 2]])
    got = blend.cosines(q, rows)
    want = 0.75 * media.cosines(q[0], rows) + 0.25 * text.cosines(q[1], rows)
    assert np.isneginf(got[0, 2]) and np.allclose(got[np.isfinite(got)], want[np.isfinite(want)])
    assert blend.items is items
    for bad in (0.0, 1.0):
        with pytest.raises(ConfigError, match="text_weight"):
            BlendedVectors(media, text, bad)
        with pytest.raises(ConfigError, match="text_weight"):
            RerankConfig(item_vectors="blend", text_weight=bad)
