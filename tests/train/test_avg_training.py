"""AVG training: the discrimination-modified loss (candidates from beam search, the positive
inserted when missed, gradient through the candidates' scores, batching), the generative part,
the voken embedding init, and `gcmr train --method avg` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gcmr.corpus import load_corpus
from gcmr.ids import IndexConfig, build_index
from gcmr.ids.trie import Trie
from gcmr.model import GenerativeRetrievalModel, ModelConfig
from gcmr.search.beam import constrained_beam_search, exhaustive_scores
from gcmr.train import TrainConfig, train
from gcmr.train.avg import (
    avg_loss,
    discriminative_candidates,
    discriminative_loss,
    init_voken_embeddings,
    voken_projection,
)
from gcmr.train.losses import cart_loss

SIZES = [6, 5, 3]


def setup(n: int = 50, seed: int = 0, dropout: float = 0.0):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), -1)
    codes = grid.reshape(-1, len(SIZES))[rng.choice(int(np.prod(SIZES)), n, replace=False)]
    model = GenerativeRetrievalModel(ModelConfig(vocab_size=40, level_sizes=SIZES, d_model=32,
                                                 n_heads=4, d_ff=64, dropout=dropout, seed=seed))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (6, 5), generator=g)
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[1, 3:] = False
    return model, Trie.build(codes, SIZES), torch.as_tensor(codes), ids.masked_fill(~mask, 0), mask


def test_positive_inserted_when_the_beams_miss_it():
    model, trie, codes, ids, mask = setup()
    model.eval()
    exact = exhaustive_scores(model, ids, mask, codes)  # [6, 50]
    # queries 0..2: the positive is the worst identifier (no beam of width 4 finds it);
    # queries 3..5: the positive is the best one (found at beam position 0)
    rows = torch.cat([exact[:3].argmin(1), exact[3:].argmax(1)])
    pos = codes[rows]
    model.train()  # candidates are searched in eval mode, and the mode is restored
    cands, target, valid, inserted = discriminative_candidates(model, ids, mask, pos, trie=trie,
                                                               beam=4)
    assert model.training
    assert inserted.tolist() == [True] * 3 + [False] * 3
    model.eval()
    _, _, beams = constrained_beam_search(model, ids, mask, trie, beam=4)
    assert torch.equal(cands[:3, :3], beams[:3, :3])  # the best beams are kept ...
    assert torch.equal(cands[:3, 3], pos[:3])  # ... and the positive replaces the last one
    assert target.tolist() == [3, 3, 3, 0, 0, 0]
    assert torch.equal(cands[3:], beams[3:]) and valid.all()
    assert torch.equal(cands[torch.arange(6), target], pos)


def test_padding_candidates_are_masked_when_the_trie_is_small():
    model, trie, codes, ids, mask = setup(n=3)
    cands, _target, valid, _ = discriminative_candidates(model, ids, mask, codes[[0, 1, 2, 0, 1, 2]],
                                                        trie=trie, beam=5)
    assert cands.shape == (6, 5, 3) and (cands >= 0).all()
    assert valid.sum(1).tolist() == [3] * 6  # 3 identifiers exist; 2 padding columns per query
    loss, parts = avg_loss(model, ids, mask, codes[[0, 1, 2, 0, 1, 2]], trie=trie, beam=5)
    assert torch.isfinite(loss) and parts["dis"] > 0


def test_discriminative_loss_gradient_is_softmax_minus_target():
    scores = torch.tensor([[-1.0, -2.0, -3.0, -0.5], [-4.0, -1.0, -2.0, -9.0]], requires_grad=True)
    target = torch.tensor([2, 1])
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    loss = discriminative_loss(scores, target, valid)
    loss.backward()
    masked = scores.detach().masked_fill(~valid, float("-inf"))
    expected = (torch.softmax(masked, 1) - torch.nn.functional.one_hot(target, 4)) / 2
    torch.testing.assert_close(scores.grad, expected)
    assert scores.grad[1, 3] == 0  # padding gets no probability and no gradient


def test_avg_loss_scores_candidates_exactly_and_trains_the_positive_up():
    model, trie, codes, ids, mask = setup()
    pos = codes[[5, 17, 23, 31, 40, 49]]
    model.eval()
    _loss, parts = avg_loss(model, ids, mask, pos, trie=trie, beam=6)
    cands, target, valid, inserted = discriminative_candidates(model, ids, mask, pos, trie=trie,
                                                               beam=6)
    scores = model.sequence_log_prob(ids, mask, cands)  # [B, b], with gradient
    dis = discriminative_loss(scores, target, valid)
    ce = cart_loss(model, ids, mask, pos, omega=0.0)[1]["ce"]
    assert parts["dis"] == pytest.approx(float(dis.detach()), rel=1e-5)
    assert parts["ce"] == pytest.approx(ce, rel=1e-5)
    assert parts["loss"] == pytest.approx(ce + float(dis.detach()), rel=1e-5)
    assert parts["dis_inserted"] == pytest.approx(float(inserted.float().mean()))
    # the gradient of L_dis reaches the model through every candidate's score
    model.zero_grad()
    avg_loss(model, ids, mask, pos, trie=trie, beam=6, dis_weight=1.0)[0].backward()
    with_dis = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    avg_loss(model, ids, mask, pos, trie=trie, beam=6, dis_weight=0.0)[0].backward()
    assert any(not torch.allclose(a, p.grad) for a, p in zip(with_dis, model.parameters()))
    # a few steps on L_dis alone raise the positive's share of the beam softmax
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    first = parts["dis_pos_prob"]
    for _ in range(5):
        cands, target, valid, _ = discriminative_candidates(model, ids, mask, pos, trie=trie,
                                                            beam=6)
        step = discriminative_loss(model.sequence_log_prob(ids, mask, cands), target, valid)
        opt.zero_grad()
        step.backward()
        opt.step()
    assert avg_loss(model, ids, mask, pos, trie=trie, beam=6)[1]["dis_pos_prob"] > first


def test_batched_loss_equals_mean_of_per_query_losses():
    model, trie, codes, ids, mask = setup()
    model.eval()
    pos = codes[[0, 9, 18, 27, 36, 45]]
    batch = avg_loss(model, ids, mask, pos, trie=trie, beam=5)[1]
    singles = [avg_loss(model, ids[i:i + 1], mask[i:i + 1], pos[i:i + 1], trie=trie, beam=5)[1]
               for i in range(6)]
    for key in ("ce", "dis", "loss"):
        assert batch[key] == pytest.approx(np.mean([s[key] for s in singles]), rel=1e-4)


def test_dis_gradient_on_three_items_reaches_the_positive_in_any_beam_position():
    """Three items, beam 3 (every item is a candidate): whatever order beam search returns
    them in, L_dis's gradient on each candidate's sequence score is softmax - one_hot(positive),
    so the model-parameter gradient is exactly sum_j (p_j - y_j) * d s_j / d theta, and one
    small step on L_dis alone raises the positive's score and its share of the candidates'
    softmax."""
    sizes = [3, 2]
    codes = torch.tensor([[0, 0], [1, 1], [2, 0]])
    model = GenerativeRetrievalModel(ModelConfig(vocab_size=20, level_sizes=sizes, d_model=16,
                                                 n_heads=2, d_ff=32, dropout=0.0, seed=3))
    model.eval()
    trie = Trie.build(codes.numpy(), sizes)
    ids = torch.tensor([[3, 4, 5], [6, 7, 8], [9, 10, 11]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    for positive in range(3):
        pos = codes[[positive] * 3]
        cands, target, valid, inserted = discriminative_candidates(model, ids, mask, pos,
                                                                   trie=trie, beam=3)
        assert not inserted.any() and valid.all()  # all three items are always found
        assert (cands[torch.arange(3), target] == pos).all()  # the target column is the positive
        model.zero_grad()
        scores = model.sequence_log_prob(ids, mask, cands)  # [3, 3]
        loss = discriminative_loss(scores, target, valid)
        grad_scores = torch.autograd.grad(loss, scores, retain_graph=True)[0]
        expected = (torch.softmax(scores.detach(), 1) - torch.nn.functional.one_hot(target, 3)) / 3
        torch.testing.assert_close(grad_scores, expected)
        assert (grad_scores[torch.arange(3), target] < 0).all()  # descent raises the positive
        # the parameters' gradient is the chain rule through the three scores, nothing else
        params = [p for p in model.parameters() if p.requires_grad]
        got = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        want = torch.autograd.grad(scores, params, grad_outputs=expected, allow_unused=True)
        for g, w in zip(got, want):
            if g is None or w is None:
                assert g is None and w is None
            else:
                torch.testing.assert_close(g, w)
        # avg_loss's dis part is this loss (its ce part is the positive's token CE)
        parts = avg_loss(model, ids, mask, pos, trie=trie, beam=3, dis_weight=1.0)[1]
        assert parts["dis"] == pytest.approx(float(loss.detach()), rel=1e-5)
        # one small step on L_dis alone: the positive's score and softmax share go up
        before = exhaustive_scores(model, ids, mask, codes)
        snapshot = {k: v.clone() for k, v in model.state_dict().items()}
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        opt.zero_grad()
        discriminative_loss(model.sequence_log_prob(ids, mask, cands), target, valid).backward()
        opt.step()
        after = exhaustive_scores(model, ids, mask, codes)
        assert (after[:, positive] > before[:, positive]).all()
        share = [torch.softmax(s, 1)[:, positive] for s in (before, after)]
        assert (share[1] > share[0]).all()
        model.load_state_dict(snapshot)


def test_ablation_switches():
    model, trie, codes, ids, mask = setup(dropout=0.1)
    pos = codes[:6]
    torch.manual_seed(0)
    _loss0, parts0 = avg_loss(model, ids, mask, pos, trie=trie, dis_weight=0.0)
    torch.manual_seed(0)
    _cart, cart_parts = cart_loss(model, ids, mask, pos, omega=0.0)
    assert "dis" not in parts0 and parts0["ce"] == pytest.approx(cart_parts["ce"], rel=1e-5)
    assert "dis" not in avg_loss(model, ids, mask, pos, trie=trie, beam=1)[1]  # nothing to rank
    _, parts = avg_loss(model, ids, mask, pos, trie=trie, beam=3, omega=0.15)
    assert parts["kl"] > 0 and "dis" in parts  # R-Drop combines with L_dis when asked
    model.eval()
    assert avg_loss(model, ids, mask, pos, trie=trie, beam=3, omega=0.15)[1]["kl"] == \
        pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- voken embedding


@pytest.fixture
def avg_index(corpus_factory, tmp_path: Path):
    rng = np.random.default_rng(1)
    corpus_dir = corpus_factory("avgc", caption_embeddings=rng.normal(size=(40, 12)))
    corpus = load_corpus(corpus_dir)
    config = IndexConfig(scheme="avg", voken_codebook_size=4, voken_length=2, latent_dim=8,
                         hidden_dims=[16], epochs=2, max_steps=10, batch_size=16,
                         init_kmeans_rows=40, shared_codebook=True)  # the paper's
    return build_index(corpus, config, show_progress=False).save(tmp_path / "avg-index")


def test_voken_projection_is_an_isometry():
    w = voken_projection(8, 32, seed=3)
    assert w.shape == (32, 8)
    torch.testing.assert_close(w.T @ w, torch.eye(8), atol=1e-5, rtol=0)
    assert torch.equal(w, voken_projection(8, 32, seed=3))
    assert voken_projection(32, 8, seed=0).shape == (8, 32)


def test_voken_embedding_copies_the_codebook(avg_index):
    from gcmr.ids import load_index

    index = load_index(avg_index)
    cfg = ModelConfig(vocab_size=30, level_sizes=index.level_sizes, d_model=32, n_heads=4, d_ff=64)
    random_init = GenerativeRetrievalModel(cfg).code_embedding.weight.detach().clone()
    model = GenerativeRetrievalModel(cfg)
    info = init_voken_embeddings(model, index)
    table = model.code_embedding.weight.detach()
    assert info["voken_init"] == "codebook"
    books = index.scheme.voken_vectors()  # [2, 4, 8], shared: both steps the same rows
    lvl0 = table[1:1 + 4]
    lvl1 = table[1 + 4:1 + 8]
    torch.testing.assert_close(lvl0, lvl1)  # shared codebook -> same vector at every step
    w = voken_projection(8, 32, seed=cfg.seed)
    torch.testing.assert_close(lvl0, info["scale"] * books[0] @ w.T, atol=1e-5, rtol=1e-4)
    # geometry kept: the voken Gram matrix is the codebook's, scaled
    torch.testing.assert_close(lvl0 @ lvl0.T, info["scale"] ** 2 * books[0] @ books[0].T,
                               atol=1e-4, rtol=1e-3)
    # BOS and the unique-counter level keep their random init; the scale matches the init
    assert torch.equal(table[0], random_init[0]) and torch.equal(table[9:], random_init[9:])
    assert float(lvl0.pow(2).mean().sqrt()) == pytest.approx(
        float(random_init[1:9].pow(2).mean().sqrt()), rel=1e-4)
    off = GenerativeRetrievalModel(cfg)
    assert init_voken_embeddings(off, index, enabled=False) == {"voken_init": "random"}
    assert torch.equal(off.code_embedding.weight, random_init)  # ablation "w/o voken embedding"


def test_voken_embedding_leaves_a_cart_index_alone(tiny_corpus, tmp_path):
    corpus = load_corpus(tiny_corpus)
    index = build_index(corpus, IndexConfig(num_clusters=4, codebook_size=4, latent_dim=8,
                                            hidden_dims=[16], epochs=1, max_steps=3,
                                            batch_size=16), show_progress=False)
    cfg = ModelConfig(vocab_size=30, level_sizes=index.level_sizes, d_model=32, n_heads=4, d_ff=64)
    model = GenerativeRetrievalModel(cfg)
    before = model.code_embedding.weight.detach().clone()
    assert init_voken_embeddings(model, index)["voken_init"] == "random"
    assert torch.equal(model.code_embedding.weight, before)


def test_train_method_avg_end_to_end(avg_index, tmp_path):
    config = TrainConfig(method="avg", epochs=1, batch_size=16, lr=3e-3, vocab_size=200,
                         val_split="test", max_val_queries=10, val_beam=4, dis_beam=4,
                         omega=0.0, warmup_epochs=0.5, max_steps=3)
    result = train(avg_index, tmp_path / "model", config=config, show_progress=False,
                   model_options={"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 1,
                                  "decoder_layers": 1})
    log = [json.loads(line) for line in
           (tmp_path / "model" / "train_log.jsonl").read_text().splitlines()]
    assert result.epochs_run == 1 and {"ce", "dis", "dis_inserted"} <= set(log[0])
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["method"] == "avg" and manifest["index"]["scheme"] == "avg"


def test_dis_runs_in_the_last_dis_epochs_only(avg_index, tmp_path):
    """AVG's two stages: L_gen alone, then L_gen + L_dis in the last ``dis_epochs`` epochs;
    a resumed run switches at the same epoch (the switch reads the run state)."""
    options = {"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 1, "decoder_layers": 1}
    base = dict(method="avg", batch_size=16, lr=3e-3, vocab_size=200, dis_beam=4, omega=0.0,
                warmup_epochs=0.5, val_split="", dis_epochs=1)
    train(avg_index, tmp_path / "m", config=TrainConfig(epochs=2, **base), show_progress=False,
          model_options=options)
    log = [json.loads(line) for line in (tmp_path / "m" / "train_log.jsonl").read_text().splitlines()]
    assert "dis" not in log[0] and "dis" in log[1]
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["loss"]["dis_epochs"] == 1
    # three epochs, resumed after the first: epochs 1-2 L_gen only, epoch 3 with L_dis
    train(avg_index, tmp_path / "r", config=TrainConfig(epochs=1, **base), show_progress=False,
          model_options=options)
    train(avg_index, tmp_path / "r", config=TrainConfig(epochs=3, **base), show_progress=False,
          model_options=options, resume=True)
    log = [json.loads(line) for line in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()]
    assert ["dis" in r for r in log] == [True, False, True]  # the 1-epoch run was all stage 2
    every = TrainConfig(epochs=2, **{**base, "dis_epochs": 5})
    train(avg_index, tmp_path / "e", config=every, show_progress=False, model_options=options)
    log = [json.loads(line) for line in (tmp_path / "e" / "train_log.jsonl").read_text().splitlines()]
    assert all("dis" in r for r in log)
    with pytest.raises(Exception, match="dis_epochs"):
        TrainConfig(dis_epochs=0)
