"""AVG aligned voken tokenizer: identifiers, shared / per-step codebooks, the alignment loss
(eqs. 3-6), caption text sources (caption_embeddings.npy, offline MiniLM) and persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gcmr.corpus import Query, load_corpus, write_corpus
from gcmr.errors import ConfigError
from gcmr.ids import SCHEMES, IndexConfig, build_index, load_index
from gcmr.ids.avg import AlignedRQVAE, AvgScheme, avg_tokenizer_loss, item_text_vectors


def _config(**changes) -> IndexConfig:
    base = {"scheme": "avg", "voken_codebook_size": 16, "voken_length": 3, "latent_dim": 8,
            "hidden_dims": [32, 16], "epochs": 3, "batch_size": 128, "warmup_steps": 2,
            "restart_interval": 2, "init_kmeans_rows": 512, "kmeans_iters": 10}
    base.update(changes)
    return IndexConfig(**base)


def _two_factor(n: int = 600, dim: int = 32, text_dim: int = 16, seed: int = 0):
    """Items mixing a weak text-relevant factor (``groups``, what the captions say) with a
    strong nuisance factor; text vectors follow ``groups`` only."""
    rng = np.random.default_rng(seed)
    groups, nuisance = rng.integers(6, size=n), rng.integers(6, size=n)
    g, u = rng.normal(size=(6, dim)), rng.normal(size=(6, dim))
    x = 0.5 * g[groups] + 1.5 * u[nuisance] + 0.1 * rng.normal(size=(n, dim))
    t = rng.normal(size=(6, text_dim))[groups] + 0.05 * rng.normal(size=(n, text_dim))
    return x.astype(np.float32), t.astype(np.float32), groups, nuisance


def _purity(codes: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of items whose label is the majority label of their code."""
    return sum(np.bincount(labels[codes == c]).max() for c in np.unique(codes)) / len(codes)


@pytest.fixture(scope="module")
def caption_corpus(tmp_path_factory):
    """300 items in 6 groups with caption_embeddings.npy (dim 16)."""
    x, t, _, _ = _two_factor(300)
    ids = [f"it{i:04d}" for i in range(len(x))]
    path = tmp_path_factory.mktemp("avg") / "corpus"
    write_corpus(path, ids=ids, captions=[[f"caption {i}"] for i in range(len(x))],
                 embeddings=x, caption_embeddings=t, name="avg-test",
                 queries={"test": [Query(f"q{i}", (ids[i],)) for i in range(0, 300, 10)]})
    return load_corpus(path, load_captions=False)


def test_registered_and_defaults_follow_the_paper():
    assert SCHEMES["avg"] is AvgScheme
    cfg = IndexConfig(scheme="avg")
    # the paper's 4 steps and shared codebook; its size follows the corpus (0 = the rule)
    assert (cfg.voken_codebook_size, cfg.voken_length, cfg.shared_codebook) == (0, 4, False)
    with pytest.raises(ConfigError, match="align_weight"):
        IndexConfig(scheme="avg", align_weight=-1.0)
    with pytest.raises(ConfigError, match="voken_codebook_size"):
        IndexConfig(scheme="avg", voken_codebook_size=-1)


def test_voken_codebook_size_rule():
    from gcmr.ids.schemes import sqrt_size

    # sqrt N as the nearest power of two, in [16, 1024]: AVG's 1024 from ~750k items up
    assert [sqrt_size(n) for n in (10, 300, 5_000, 20_000, 100_000, 1_000_000, 10**7)] == \
        [16, 16, 64, 128, 256, 1024, 1024]
    assert all(sqrt_size(n) <= sqrt_size(2 * n) for n in range(1, 3_000_000, 9_973))


def test_default_codebook_is_sized_to_the_corpus(caption_corpus, tmp_path):
    index = build_index(caption_corpus, _config(voken_codebook_size=0), show_progress=False)
    assert index.level_sizes[:3] == [16, 16, 16]  # sqrt(300) = 17.3 -> 16
    fit = index.stats["fit"]
    assert fit["size_rule"] == {"rule": "voken_codebook_size = pow2(sqrt N) in [16, 1024]",
                                "num_items": 300, "voken_codebook_size": 16}
    assert index.config.voken_codebook_size == 16  # the manifest records the size used
    saved = load_index(index.save(tmp_path / "idx"))
    assert saved.level_sizes == index.level_sizes
    explicit = build_index(caption_corpus, _config(voken_codebook_size=32), show_progress=False)
    assert explicit.level_sizes[:3] == [32, 32, 32] and "size_rule" not in explicit.stats["fit"]


def test_index_ids_unique_and_round_trip(caption_corpus, tmp_path):
    index = build_index(caption_corpus, _config(), show_progress=False)
    assert index.codes.shape == (300, 4)
    assert len(np.unique(index.codes, axis=0)) == 300
    assert index.level_sizes[:3] == [16, 16, 16]
    assert index.level_names == ["rq1", "rq2", "rq3", "unique"]
    fit = index.stats["fit"]
    assert fit["text_source"] == "caption_embeddings.npy" and fit["text_dim"] == 16
    assert 0 < fit["rqvae"]["codebook_used"] <= 16 and fit["shared_codebook"] is False
    assert -1.0 <= fit["rqvae"]["align_cos"] <= 1.0
    np.testing.assert_array_equal(index.encode(np.asarray(caption_corpus.embeddings)),
                                  index.codes[:, :-1])
    again = load_index(index.save(tmp_path / "idx"), corpus=caption_corpus)
    np.testing.assert_array_equal(again.encode(caption_corpus.embeddings[:50]),
                                  index.codes[:50, :-1])
    torch.testing.assert_close(again.scheme.voken_vectors(), index.scheme.voken_vectors())


def test_shared_and_per_step_codebooks():
    x, t, _, _ = _two_factor(200)
    shared = AvgScheme(_config(shared_codebook=True)).fit(x, text=t)
    assert tuple(shared.rqvae_.codebooks.shape) == (1, 16, 8)
    vv = shared.voken_vectors()
    assert vv.shape == (3, 16, 8) and torch.equal(vv[0], vv[2])
    # every step quantizes with the one codebook: decoding a code at step 0 or 2 adds the same vector
    codes = torch.tensor([[5, 0, 0], [0, 0, 5]])
    z = shared.rqvae_.decode_latent(codes) - shared.rqvae_.decode_latent(torch.zeros(1, 3, dtype=torch.long))
    torch.testing.assert_close(z[0], z[1])
    own = AvgScheme(_config(shared_codebook=False)).fit(x, text=t)
    assert tuple(own.rqvae_.codebooks.shape) == (3, 16, 8)
    assert not torch.equal(own.voken_vectors()[0], own.voken_vectors()[2])
    # decode inverts the quantizer: codes -> z^(M) equals the latent it quantized to
    xt = torch.from_numpy(x[:40])
    for scheme in (shared, own):
        m = scheme.rqvae_
        codes, z_q, _, _ = m.quantize(m.encoder(m.normalize(xt)))
        torch.testing.assert_close(m.decode_latent(codes), z_q)
        rec = scheme.decode(scheme.encode(x[:40]))
        own_err = ((rec - x[:40]) ** 2).sum(1).mean()
        other_err = ((rec - x[40:80]) ** 2).sum(1).mean()
        assert own_err < other_err


def test_alignment_gradient_moves_reconstruction_toward_text():
    torch.manual_seed(0)
    model = AlignedRQVAE(12, [16], 4, 2, 8, shared=True, text_dim=6)
    x = torch.randn(32, 12)
    text = torch.nn.functional.normalize(torch.randn(32, 6), dim=-1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def align_err() -> float:
        with torch.no_grad():
            return float((model.align(model(x).x_hat) - text).pow(2).sum(-1).mean())

    before = align_err()
    for _ in range(20):
        out = model(x)
        loss, parts = avg_tokenizer_loss(out, model, text, None, alpha=1.0, beta=0.25,
                                         align_weight=1.0)
        assert parts["loss"] == pytest.approx(parts["recon"] + parts["quant"] + parts["align"],
                                              rel=1e-5)
        opt.zero_grad()
        loss.backward()
        # the alignment gradient reaches the decoder and (straight-through) the encoder
        assert model.decoder[0].weight.grad.abs().sum() > 0
        assert model.encoder[0].weight.grad.abs().sum() > 0
        opt.step()
    assert align_err() < before
    # masked items contribute nothing
    out = model(x)
    _, parts = avg_tokenizer_loss(out, model, text, torch.zeros(32, dtype=torch.bool),
                                  alpha=1.0, beta=0.25, align_weight=1.0)
    assert parts["align"] == 0.0


def test_alignment_makes_vokens_follow_the_text():
    """The first voken of an unaligned tokenizer follows the dominant (nuisance) factor of the
    item vectors; with the alignment loss it follows what the captions say."""
    x, t, groups, nuisance = _two_factor()
    cfg = _config(voken_codebook_size=6, voken_length=2, epochs=30, restart_interval=10,
                  warmup_steps=5)
    plain = AvgScheme(cfg.replace(align_weight=0.0)).fit(x)
    aligned = AvgScheme(cfg).fit(x, text=t)
    p_codes, a_codes = plain.encode(x)[:, 0], aligned.encode(x)[:, 0]
    assert _purity(a_codes, groups) > _purity(p_codes, groups) + 0.2
    assert _purity(p_codes, nuisance) > _purity(a_codes, nuisance)
    assert plain.fit_info_["text_source"] == "none" and plain.rqvae_.align_proj is None
    assert aligned.fit_info_["rqvae"]["align_cos"] > 0.5


def test_needs_text_unless_alignment_is_off():
    x, _, _, _ = _two_factor(100)
    with pytest.raises(ConfigError, match="align_weight=0"):
        AvgScheme(_config()).fit(x)
    with pytest.raises(ConfigError, match="rows"):
        AvgScheme(_config()).fit(x, text=np.ones((99, 4), dtype=np.float32))


def test_codebook_adapts_to_small_corpora_and_collisions_get_counters(tmp_path):
    x, t, _, _ = _two_factor(100)
    x[[3, 30, 60]] = x[3]
    t[[3, 30, 60]] = t[3]
    ids = [f"i{i}" for i in range(100)]
    write_corpus(tmp_path / "c", ids=ids, captions=[["x"]] * 100, embeddings=x,
                 caption_embeddings=t)
    corpus = load_corpus(tmp_path / "c", load_captions=False)
    index = build_index(corpus, _config(voken_codebook_size=1024), show_progress=False)
    assert index.config.voken_codebook_size == 25 and index.level_sizes[:3] == [25] * 3
    sem = index.codes[[3, 30, 60], :-1]
    assert (sem == sem[0]).all()
    assert len(np.unique(index.codes, axis=0)) == 100 and index.stats["max_group_size"] >= 3


def test_fit_is_deterministic():
    x, t, _, _ = _two_factor(200)
    a = AvgScheme(_config()).fit(x, text=t).encode(x)
    b = AvgScheme(_config()).fit(x, text=t).encode(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, AvgScheme(_config(seed=1)).fit(x, text=t).encode(x))


@pytest.mark.slow
def test_captions_encoded_by_offline_minilm(tmp_path):
    """Without caption_embeddings.npy the captions go through the bundled all-MiniLM-L6-v2
    (no network); an item's vector is the re-normalized mean of its captions' vectors."""
    captions = [["a dog runs on the beach"], ["a red car in the city", "a parked red car"],
                ["a dog runs on the beach"], []] * 3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8)).astype(np.float32)
    write_corpus(tmp_path / "c", ids=[f"i{i}" for i in range(12)], captions=captions,
                 embeddings=x)
    corpus = load_corpus(tmp_path / "c", load_captions=False)  # as `gcmr index` loads it
    vec, mask, info = item_text_vectors(corpus, np.arange(12), text_encoder="minilm")
    assert vec.shape == (12, 384) and info["text_source"] == "captions"
    assert info["text_dim"] == 384 and info["captions"] == 12
    assert info["captions_encoded"] == 3  # each distinct caption once
    assert mask.tolist() == [True, True, True, False] * 3
    np.testing.assert_allclose(np.linalg.norm(vec[mask], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vec[0], vec[2], atol=1e-6)
    assert float(vec[0] @ vec[1]) < 0.5  # a dog on a beach is not a red car
    from gcmr.encoders import load_text_encoder

    enc = load_text_encoder("minilm")
    both = enc.encode_text(captions[1])
    mean = both.mean(0) / np.linalg.norm(both.mean(0))
    np.testing.assert_allclose(vec[1], mean, atol=1e-5)
    cfg = _config(voken_codebook_size=2, voken_length=2, init_kmeans_rows=12, epochs=2)
    index = build_index(corpus, cfg, show_progress=False)
    assert index.stats["fit"]["text_source"] == "captions" and index.codes.shape == (12, 3)


def test_avg_end_to_end_through_the_cli(caption_corpus, tmp_path, capsys):
    """gcmr index --scheme avg with the AVG options, gcmr train --method avg, gcmr search."""
    import json

    from gcmr.cli import main

    idx, model = tmp_path / "idx", tmp_path / "model"
    assert main(["index", str(caption_corpus.path), str(idx), "--scheme", "avg", "--vokens", "3",
                 "--voken-codebook-size", "16", "--shared-codebook", "--align-weight", "0.5",
                 "--max-steps", "5", "--quiet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["shared_codebook"] is True and out["config"]["voken_length"] == 3
    assert out["config"]["align_weight"] == 0.5 and len(out["level_sizes"]) == 4
    assert main(["train", str(idx), str(model), "--method", "avg", "--epochs", "1",
                 "--batch-size", "32", "--vocab-size", "100", "--d-model", "32", "--heads", "2",
                 "--ffn", "64", "--encoder-layers", "1", "--decoder-layers", "1", "--dis-beam",
                 "3", "--dis-weight", "0.5", "--dis-epochs", "1", "--val-split", "test",
                 "--quiet"]) == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["method"] == "avg"
    assert manifest["loss"] == {"omega": 0.0, "dis_weight": 0.5, "dis_epochs": 1}
    capsys.readouterr()
    assert main(["search", str(model), "caption 3", "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2
