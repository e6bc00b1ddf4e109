"""Code vectors (ModelConfig.code_vectors): the least-squares fit, the per-code scores in the
decoder's logits, exact beam search with them, and generation that ranks by <q, x_hat>."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gcmr.errors import ConfigError
from gcmr.ids.trie import Trie
from gcmr.model import GenerativeRetrievalModel, ModelConfig
from gcmr.search.beam import constrained_beam_search, exhaustive_scores
from gcmr.train.code_vectors import fit_code_vectors

SIZES = [4, 3, 5]


def _codes(n: int, sizes: list[int], seed: int) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), -1)
    grid = grid.reshape(-1, len(sizes))
    return grid[np.random.default_rng(seed).choice(len(grid), n, replace=False)]


def test_least_squares_recovers_additive_items():
    rng = np.random.default_rng(0)
    codes = _codes(50, SIZES, 0)
    true = [rng.normal(size=(s, 8)) for s in SIZES]
    x = sum(true[lvl][codes[:, lvl]] for lvl in range(3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # the fit reads unit rows
    vectors, info = fit_code_vectors(codes, x.astype(np.float32), SIZES, sweeps=50)
    assert vectors.shape == (sum(SIZES), 8)
    offsets = [0, 4, 7]
    recon = sum(vectors[offsets[lvl] + codes[:, lvl]] for lvl in range(3))
    # normalized, the rows are close to additive but not exactly
    err = np.linalg.norm(recon - x) / np.linalg.norm(x)
    assert info["relative_error"] == pytest.approx(err, abs=1e-3)
    assert err < 0.6
    # one level: each vector is the mean of its items (exact)
    v1, _ = fit_code_vectors(codes[:, :1], x.astype(np.float32), SIZES[:1], sweeps=1)
    for c in range(SIZES[0]):
        np.testing.assert_allclose(v1[c], x[codes[:, 0] == c].mean(0), atol=1e-5)


def test_more_sweeps_never_increase_the_error():
    codes = _codes(60, SIZES, 1)
    rng = np.random.default_rng(1)
    parts = [rng.normal(size=(s, 6)) for s in SIZES]
    x = sum(parts[lvl][codes[:, lvl]] for lvl in range(3)).astype(np.float32)
    scale = np.linalg.norm(x, axis=1, keepdims=True)
    errs = [fit_code_vectors(codes, x / scale, SIZES, sweeps=s)[1]["relative_error"]
            for s in (1, 2, 8)]
    assert errs[0] >= errs[1] >= errs[2]


def test_sampled_fit_reads_at_most_max_rows_and_leaves_unseen_codes_zero():
    codes = np.zeros((100, 2), dtype=np.int64)
    codes[:, 1] = np.arange(100) % 3
    x = np.random.default_rng(2).normal(size=(100, 4)).astype(np.float32)
    vectors, info = fit_code_vectors(codes, x, [2, 3], max_rows=40, seed=0)
    assert info["rows"] == 40
    np.testing.assert_array_equal(vectors[1], 0.0)  # code 1 of level 0 never occurs


def test_mismatched_codes_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        fit_code_vectors(np.zeros((5, 2), dtype=np.int64), np.zeros((4, 3)), [1, 1])


def test_code_vectors_need_the_query_head():
    with pytest.raises(ConfigError, match="query-vector head"):
        ModelConfig(vocab_size=20, level_sizes=SIZES, code_vectors="add")


def _model(seed: int = 0, *, code_vectors: str = "add") -> GenerativeRetrievalModel:
    cfg = ModelConfig(vocab_size=50, level_sizes=SIZES, d_model=32, n_heads=4, d_ff=64,
                      seed=seed, query_dim=8, code_vectors=code_vectors)
    model = GenerativeRetrievalModel(cfg).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 10)
        model.code_vectors.copy_(torch.randn(model.code_vectors.shape, generator=g))
    return model


def _queries(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (4, 6), generator=g)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    return ids.masked_fill(~mask, 0), mask


def test_new_parameters_do_not_change_the_other_weights_init():
    with_cv, without = _model(3), GenerativeRetrievalModel(ModelConfig(
        vocab_size=50, level_sizes=SIZES, d_model=32, n_heads=4, d_ff=64, seed=3, query_dim=8))
    theirs = without.state_dict()
    for name, value in with_cv.state_dict().items():
        if name in theirs:
            assert torch.equal(value, theirs[name]), name
    assert set(with_cv.state_dict()) - set(theirs) == {"code_vectors", "code_log_scale"}


def test_steer_has_no_free_output_rows_and_starts_as_pure_reconstruction_scores():
    model = _model(5, code_vectors="steer")
    assert model.output is None and not model.code_vectors.requires_grad
    assert torch.count_nonzero(model.steer.weight) == 0
    codes = _codes(30, SIZES, 5)
    ids, mask = _queries(5)
    with torch.no_grad():
        scores = exhaustive_scores(model, ids, mask, codes)
        q = model.query_vectors(model.encode(ids, mask))
    offsets = [0, 4, 7]
    recon = sum(model.code_vectors.detach()[torch.as_tensor(offsets[lvl] + codes[:, lvl])]
                for lvl in range(3))
    assert torch.equal(scores.argsort(dim=1, descending=True),
                       (q @ recon.t()).argsort(dim=1, descending=True))
    with pytest.raises(ConfigError, match="code_vectors must be one of"):
        ModelConfig(vocab_size=20, level_sizes=SIZES, query_dim=4, code_vectors="yes")


@pytest.mark.parametrize("mode", ["add", "steer"])
def test_beam_search_with_code_vectors_is_exact(mode):
    model = _model(0, code_vectors=mode)
    if mode == "steer":  # a trained steer is not zero: exactness must not rely on it
        with torch.no_grad():
            model.steer.weight.normal_(generator=torch.Generator().manual_seed(4))
    codes = _codes(30, SIZES, 0)
    trie = Trie.build(codes, SIZES)
    ids, mask = _queries(0)
    exact = exhaustive_scores(model, ids, mask, codes)
    top_scores, top_rows = exact.topk(8, dim=1)
    scores, rows, got = constrained_beam_search(model, ids, mask, trie, beam=len(codes), k=8)
    assert torch.equal(rows, top_rows)
    torch.testing.assert_close(scores, top_scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores, model.sequence_log_prob(ids, mask, got),
                               rtol=1e-5, atol=1e-5)


def test_code_vectors_change_the_scores_and_rank_by_the_reconstruction():
    model = _model(1)
    codes = _codes(30, SIZES, 1)
    ids, mask = _queries(1)
    with torch.no_grad():
        plain = exhaustive_scores(model, ids, mask, codes)
        saved = model.code_vectors.clone()
        model.code_vectors.zero_()
        assert not torch.allclose(plain, exhaustive_scores(model, ids, mask, codes))
        model.code_vectors.copy_(saved)
        # silence the decoder's own logits: the sequence score is then scale * <q, x_hat>
        # minus per-level normalizers that are the same for every identifier
        model.output.weight.zero_()
        scores = exhaustive_scores(model, ids, mask, codes)
        q = model.query_vectors(model.encode(ids, mask))
    offsets = [0, 4, 7]
    recon = sum(saved[torch.as_tensor(offsets[lvl] + codes[:, lvl])] for lvl in range(3))
    dots = q @ recon.t()
    assert torch.equal(scores.argsort(dim=1, descending=True),
                       dots.argsort(dim=1, descending=True))


def test_live_updates_grow_the_code_vectors_of_new_counters():
    from gcmr.search.updates import grow_model

    model = _model(2)
    grown = grow_model(model, [4, 3, 7])
    before = model.code_vectors.detach()
    after = grown.code_vectors.detach()
    assert after.shape == (14, 8)
    torch.testing.assert_close(after[:12], before)
    torch.testing.assert_close(after[12:], before[11:12].expand(2, -1))
    assert float(grown.code_log_scale.detach()) == float(model.code_log_scale.detach())


def _tiny_index(corpus_path, out, **options):
    from gcmr.corpus import load_corpus
    from gcmr.ids import IndexConfig, build_index

    config = IndexConfig(num_clusters=4, codebook_size=4, latent_dim=8, hidden_dims=[16],
                         epochs=2, max_steps=10, batch_size=16, **options)
    return build_index(load_corpus(corpus_path), config, show_progress=False).save(out)


def test_training_defaults_to_steer_on_additive_identifiers_and_fits_the_vectors(
        tiny_corpus, tmp_path):
    from gcmr.ids import load_index
    from gcmr.model.io import read_generative_manifest
    from gcmr.search.retriever import Retriever
    from gcmr.train import TrainConfig, train
    from gcmr.train.trainer import default_code_vectors

    additive = _tiny_index(tiny_corpus, tmp_path / "add", fine_quantizer="kmeans")
    rqvae = _tiny_index(tiny_corpus, tmp_path / "rq", fine_quantizer="rqvae")
    assert default_code_vectors(load_index(additive)) == "steer"
    assert default_code_vectors(load_index(rqvae)) == "none"
    config = TrainConfig(epochs=1, batch_size=8, max_steps=3, val_split=None,
                         dense_weight=1.0, device="cpu")
    small = {"d_model": 16, "n_heads": 2, "d_ff": 32, "encoder_layers": 1,
             "decoder_layers": 1}
    train(additive, tmp_path / "m", config=config, model_options=small, show_progress=False)
    manifest = read_generative_manifest(tmp_path / "m")
    assert manifest["model_config"]["code_vectors"] == "steer"
    model = Retriever.load(tmp_path / "m", device="cpu").model
    index = load_index(additive)
    from gcmr.corpus import load_corpus

    expected, _ = fit_code_vectors(index.codes, load_corpus(tiny_corpus).embeddings,
                                   list(index.level_sizes))
    # frozen in steer mode: still the least-squares fit after training
    np.testing.assert_allclose(model.code_vectors.detach().numpy(), expected, atol=1e-5)
    train(rqvae, tmp_path / "m2", config=config, model_options=small, show_progress=False)
    assert read_generative_manifest(tmp_path / "m2")["model_config"]["code_vectors"] == "none"
