"""Every scheme: unique fixed-length identifiers, forced collisions, encode / decode, adaptation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gcmr.errors import ConfigError
from gcmr.ids import SCHEMES, IndexConfig, NotFittedError, build_index
from gcmr.ids.schemes import CartScheme, HKMeansScheme, RQScheme

ALL = ["cart", "rq", "hkmeans", "atomic", "random"]


@pytest.mark.parametrize("scheme", ALL)
def test_unique_fixed_length_ids_within_level_sizes(small_corpus, fast_config, scheme):
    index = build_index(small_corpus, fast_config(scheme=scheme), show_progress=False)
    codes = index.codes
    expected_len = 1 if scheme == "atomic" else 4  # M + 1 semantic levels + unique counter
    assert codes.shape == (400, expected_len) and codes.dtype == np.int64
    assert len(np.unique(codes, axis=0)) == 400
    assert (codes >= 0).all() and (codes < np.array(index.level_sizes)).all()
    assert index.level_sizes[-1] == codes[:, -1].max() + 1
    assert index.stats["unique_ids_pct"] == 100.0
    assert index.item_ids == small_corpus.ids


@pytest.mark.parametrize("scheme", ["cart", "rq", "hkmeans", "random"])
def test_forced_collisions_get_counters(corpus_of, clustered, fast_config, scheme):
    emb = clustered(120, 16, seed=3)
    dup_rows = [5, 17, 40, 99]
    emb[dup_rows] = emb[5]  # four identical embeddings must share the semantic code
    index = build_index(corpus_of(emb), fast_config(scheme=scheme), show_progress=False)
    sem = index.codes[dup_rows, :-1]
    assert (sem == sem[0]).all()
    group = (index.codes[:, :-1] == sem[0]).all(axis=1)
    rows = np.flatnonzero(group)
    # counters 0..k-1 in row order over the whole group (other items may share the code too)
    assert index.codes[rows, -1].tolist() == list(range(len(rows)))
    assert index.stats["max_group_size"] >= 4


def test_atomic_counter_is_row_index(small_corpus, fast_config):
    index = build_index(small_corpus, fast_config(scheme="atomic"), show_progress=False)
    assert index.level_sizes == [400]
    assert index.codes[:, 0].tolist() == list(range(400))


@pytest.mark.parametrize("scheme", ALL)
def test_encode_reproduces_semantic_codes(small_corpus, fast_config, scheme):
    index = build_index(small_corpus, fast_config(scheme=scheme, encode_batch_size=64),
                        show_progress=False)
    again = index.encode(np.asarray(small_corpus.embeddings))
    np.testing.assert_array_equal(again, index.codes[:, :-1])
    # chunking does not change codes; a single row encodes alike
    np.testing.assert_array_equal(index.encode(small_corpus.embeddings[7:8]), index.codes[7:8, :-1])


def test_fit_is_deterministic(small_corpus, fast_config):
    a = build_index(small_corpus, fast_config(), show_progress=False)
    b = build_index(small_corpus, fast_config(), show_progress=False)
    np.testing.assert_array_equal(a.codes, b.codes)
    c = build_index(small_corpus, fast_config(seed=1), show_progress=False)
    assert not np.array_equal(a.codes, c.codes)


def test_cart_decode_inverts_encode_where_it_can(small_corpus, fast_config):
    scheme = CartScheme(fast_config(fine_quantizer="rqvae")).fit(small_corpus.embeddings)
    # coarse level: a centroid encodes to its own cluster
    coarse = scheme.encode(scheme.centroids_.numpy())[:, 0]
    assert coarse.tolist() == list(range(len(scheme.centroids_)))
    # fine levels: codes -> quantized latent equals the latent the quantizer produced
    x = torch.from_numpy(np.array(small_corpus.embeddings[:50], dtype=np.float32))
    r = x - scheme.centroids_[torch.from_numpy(scheme.encode(x.numpy())[:, 0])]
    fine, z_q, _, _ = scheme.rqvae_.quantize(scheme.rqvae_.encoder(scheme.rqvae_.normalize(r)))
    assert torch.allclose(scheme.rqvae_.decode_latent(fine), z_q, atol=1e-6)
    # full decode lands nearer its own item than a random other item, on average
    rec = scheme.decode(scheme.encode(x.numpy()))
    own = ((rec - x.numpy()) ** 2).sum(1).mean()
    other = ((rec - x.numpy()[::-1]) ** 2).sum(1).mean()
    assert rec.shape == x.shape and own < other


def test_hkmeans_decode_and_descent(small_corpus, fast_config):
    scheme = HKMeansScheme(fast_config(scheme="hkmeans", hkmeans_branching=4)).fit(
        small_corpus.embeddings)
    assert scheme.semantic_sizes_ == [4, 4, 4]
    codes = scheme.encode(small_corpus.embeddings)
    assert codes.max() < 4
    # decoding a path and re-encoding the decoded point returns the path
    dec = scheme.decode(codes)
    np.testing.assert_array_equal(scheme.encode(dec), codes)


def test_rq_decode_latent_roundtrip(small_corpus, fast_config):
    scheme = RQScheme(fast_config(scheme="rq")).fit(small_corpus.embeddings)
    x = torch.from_numpy(np.array(small_corpus.embeddings[:30], dtype=np.float32))
    codes, z_q, _, _ = scheme.rqvae_.quantize(scheme.rqvae_.encoder(scheme.rqvae_.normalize(x)))
    np.testing.assert_array_equal(codes.numpy(), scheme.encode(x.numpy()))
    assert torch.allclose(scheme.rqvae_.decode_latent(codes), z_q, atol=1e-6)
    assert scheme.decode(codes.numpy()).shape == x.shape


@pytest.mark.parametrize("scheme", ["cart", "rq", "hkmeans", "random"])
def test_not_fitted_is_refused(scheme):
    with pytest.raises(NotFittedError):
        SCHEMES[scheme](IndexConfig(scheme=scheme)).encode(np.zeros((2, 4), dtype=np.float32))


def test_wrong_dimension_is_refused(small_corpus, fast_config):
    scheme = CartScheme(fast_config()).fit(small_corpus.embeddings)
    with pytest.raises(ConfigError, match="dimension 7"):
        scheme.encode(np.zeros((2, 7), dtype=np.float32))


@pytest.mark.parametrize("scheme", ALL)
def test_tiny_corpus_adapts_sizes(corpus_of, clustered, scheme, capsys):
    corpus = corpus_of(clustered(20, 16, seed=9))
    config = IndexConfig(scheme=scheme, hidden_dims=[16, 8], latent_dim=4, epochs=2)
    index = build_index(corpus, config, show_progress=False)  # defaults K = C = 128 > 20 items
    assert len(np.unique(index.codes, axis=0)) == 20
    assert (index.codes < np.array(index.level_sizes)).all()
    if scheme == "cart":
        assert index.config.num_clusters == 5 and index.config.codebook_size == 5
        assert index.level_sizes[:3] == [5, 5, 5]
        assert "num_clusters=128" in capsys.readouterr().err
    if scheme == "rq":
        assert index.config.codebook_size == 5


def test_float16_embeddings(corpus_of, clustered, fast_config):
    corpus = corpus_of(clustered(200, 16, seed=2), dtype="float16")
    assert corpus.embeddings.dtype == np.float16
    index = build_index(corpus, fast_config(), show_progress=False)
    np.testing.assert_array_equal(index.encode(corpus.embeddings), index.codes[:, :-1])


def test_max_fit_items_subsample(small_corpus, fast_config):
    index = build_index(small_corpus, fast_config(max_fit_items=150), show_progress=False)
    assert index.stats["fit"]["fit_items"] == 150
    assert len(np.unique(index.codes, axis=0)) == 400


def test_bad_options_name_the_option(small_corpus):
    with pytest.raises(ConfigError, match="codebook_size"):
        IndexConfig(codebook_size=-1)  # 0 is the size rule (cart), negative is refused
    with pytest.raises(ConfigError, match="codebook_size"):
        IndexConfig(scheme="rq", codebook_size=0)
    with pytest.raises(ConfigError, match="unknown scheme 'nope'.*cart"):
        build_index(small_corpus, IndexConfig(scheme="nope"), show_progress=False)
    with pytest.raises(ConfigError, match="unknown field"):
        IndexConfig.from_dict({"clusters": 3})
