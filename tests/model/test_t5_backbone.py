"""T5 backbone: a tiny random-weight T5 saved with save_pretrained and loaded back from the
local path (no network), vocabulary extended by the identifier tokens, beam search and the
losses on top of it, voken init, and the tied-weight state dict round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gcmr.artifacts import load_tensors, save_tensors
from gcmr.errors import GcmrError
from gcmr.ids.trie import Trie
from gcmr.search.beam import constrained_beam_search, exhaustive_scores
from gcmr.train.avg import avg_loss, init_voken_embeddings
from gcmr.train.losses import cart_loss

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from gcmr.model.t5_backbone import T5Backbone, T5BackboneConfig, T5QueryTokenizer

SIZES = [4, 3, 5]


@pytest.fixture(scope="module")
def t5_dir(tiny_t5_dir) -> Path:
    return tiny_t5_dir


@pytest.fixture(scope="module")
def setup(t5_dir):
    model = T5Backbone.from_pretrained(t5_dir, SIZES, seed=0).eval()
    tokenizer = T5QueryTokenizer.from_source(t5_dir, max_length=8)
    ids, mask = tokenizer.encode_batch(["a dog runs", "the red car on the beach",
                                        "a cat in the city"])
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), -1).reshape(-1, 3)
    codes = grid[rng.choice(len(grid), 25, replace=False)]
    return model, tokenizer, ids, mask, codes, Trie.build(codes, SIZES)


def test_loads_local_weights_and_extends_the_vocabulary(t5_dir, setup):
    model = setup[0]
    original = transformers.T5ForConditionalGeneration.from_pretrained(t5_dir,
                                                                       local_files_only=True)
    table = model.voken_embedding_weight()
    assert table.shape == (100 + sum(SIZES), 32)
    torch.testing.assert_close(table[:100], original.shared.weight)  # pretrained rows kept
    assert model.config.base_vocab_size == 100 and model.config.source == str(t5_dir)
    assert model.token_ids(2, torch.tensor([0, 4])).tolist() == [100 + 7, 100 + 11]
    # the identifier rows come from a private seeded generator, not the global RNG
    again = T5Backbone.from_pretrained(t5_dir, SIZES, seed=0)
    assert torch.equal(again.voken_embedding_weight(), table)
    with pytest.raises(GcmrError, match="not found"):
        T5Backbone.from_pretrained(str(t5_dir) + "-missing", SIZES)


def test_query_tokenizer_from_the_checkpoint(setup, tmp_path):
    _, tokenizer, ids, mask, _, _ = setup
    assert tokenizer.pad_id == 0 and ids.shape == (3, 7)
    assert ids[0, :4].tolist() == [3, 5, 9, 1]  # a dog runs </s>
    assert mask.sum(1).tolist() == [4, 7, 6]
    tokenizer.save(tmp_path / "tokenizer.json")
    again = T5QueryTokenizer.load(tmp_path / "tokenizer.json")
    assert torch.equal(again.encode_batch(["a dog runs"])[0], ids[:1, :4])
    assert again.max_length == 8


def test_beam_search_on_t5_equals_exhaustive(setup):
    model, _, ids, mask, codes, trie = setup
    exact = exhaustive_scores(model, ids, mask, codes)
    top_scores, top_rows = exact.topk(5, dim=1)
    scores, rows, got = constrained_beam_search(model, ids, mask, trie, beam=len(codes), k=5)
    assert torch.equal(rows, top_rows)
    torch.testing.assert_close(scores, top_scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.sequence_log_prob(ids, mask, got), scores,
                               rtol=1e-5, atol=1e-5)
    logits = model(ids, mask, torch.as_tensor(codes[:3]))
    assert logits.shape == (3, 3, 5) and torch.isinf(logits[:, 1, 3:]).all()


def test_losses_train_the_t5_backbone(t5_dir, setup):
    _, _, ids, mask, codes, trie = setup
    model = T5Backbone.from_pretrained(t5_dir, SIZES, seed=0)
    pos = torch.as_tensor(codes[[2, 7, 11]])
    _, parts = cart_loss(model, ids, mask, pos, omega=0.1)
    assert parts["kl"] >= 0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(8):
        loss, parts = avg_loss(model, ids, mask, pos, trie=trie, beam=4)
        first = parts if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert "dis" in first and parts["loss"] < first["loss"]


def test_voken_init_and_tied_state_dict_round_trip(t5_dir, setup, tmp_path):
    _, _, ids, mask, codes, _ = setup
    model = T5Backbone.from_pretrained(t5_dir, SIZES, seed=0)

    class Scheme:  # what init_voken_embeddings reads from an avg index
        @staticmethod
        def voken_vectors():
            return torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))

    class Index:
        scheme = Scheme()

    with pytest.raises(GcmrError, match="level sizes"):  # 2 steps of 4 vs sizes [4, 3, 5]
        init_voken_embeddings(model, Index())
    model4 = T5Backbone.from_pretrained(t5_dir, [4, 4, 5], seed=0)
    info = init_voken_embeddings(model4, Index())
    table = model4.voken_embedding_weight()
    assert info["voken_init"] == "codebook"
    assert not torch.equal(table[100:108], model.voken_embedding_weight()[100:108])
    state = model4.state_dict()
    assert "t5.shared.weight" in state and "t5.lm_head.weight" not in state  # tied: once
    save_tensors(tmp_path / "w.safetensors", state)
    config = T5BackboneConfig.from_dict(model4.config.to_dict())
    rebuilt = T5Backbone.from_config(config)
    rebuilt.load_state_dict(load_tensors(tmp_path / "w.safetensors"))
    model4.eval()
    rebuilt.eval()
    pos = torch.as_tensor(np.minimum(codes[:3], [3, 3, 4]))
    torch.testing.assert_close(rebuilt.sequence_log_prob(ids, mask, pos),
                               model4.sequence_log_prob(ids, mask, pos))
