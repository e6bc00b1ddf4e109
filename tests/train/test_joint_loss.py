"""The joint loss of the generative model with a query-vector head: CART (CE + omega R-Drop)
plus dense_weight * InfoNCE against the frozen item embeddings, from one encoder pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gcmr.errors import ConfigError
from gcmr.model import GenerativeRetrievalModel, ModelConfig
from gcmr.train.losses import cart_loss, info_nce

SIZES = [4, 3]


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 30, (6, 5), generator=g)
    mask = torch.ones(6, 5, dtype=torch.bool)
    codes = torch.stack([torch.randint(0, s, (6,), generator=g) for s in SIZES], dim=1)
    rows = torch.tensor([0, 1, 2, 0, 3, 4])
    items = F.normalize(torch.randn(5, 8, generator=g), dim=-1)[rows]
    return ids, mask, codes, items, rows


def model(query_dim: int = 8) -> GenerativeRetrievalModel:
    return GenerativeRetrievalModel(ModelConfig(vocab_size=30, level_sizes=SIZES, d_model=16,
                                                n_heads=2, d_ff=32, query_dim=query_dim,
                                                dropout=0.0))


@pytest.mark.parametrize("omega", [0.0, 0.15])
def test_joint_loss_is_cart_plus_weighted_info_nce(omega: float) -> None:
    m = model()
    ids, mask, codes, items, rows = batch()
    plain, plain_parts = cart_loss(m, ids, mask, codes, omega=omega)
    joint, parts = cart_loss(m, ids, mask, codes, omega=omega, items=items, rows=rows,
                             dense_weight=0.5)
    nce = info_nce(m.query_vectors(m.encode(ids, mask)), items, rows, m.logit_scale)
    # no dropout: the cart part equals the plain loss, the dense part the tower's InfoNCE
    assert torch.allclose(joint, plain + 0.5 * nce, atol=1e-5)
    assert abs(parts["nce"] - float(nce.detach())) < 1e-5 and abs(parts["ce"] - plain_parts["ce"]) < 1e-5
    joint.backward()
    assert m.query_head.projection.weight.grad.abs().sum() > 0
    assert m.query_head.log_scale.grad is not None


def test_without_dense_weight_the_head_gets_no_gradient() -> None:
    m = model()
    ids, mask, codes, _, _ = batch()
    loss, parts = cart_loss(m, ids, mask, codes, omega=0.15)
    loss.backward()
    assert "nce" not in parts and m.query_head.projection.weight.grad is None


def test_the_dense_term_needs_a_head_and_the_items() -> None:
    ids, mask, codes, items, rows = batch()
    with pytest.raises(ConfigError, match="no query-vector head"):
        cart_loss(model(query_dim=0), ids, mask, codes, items=items, rows=rows,
                  dense_weight=1.0)
    with pytest.raises(ConfigError, match="item embeddings"):
        cart_loss(model(), ids, mask, codes, dense_weight=1.0)
    with pytest.raises(ConfigError, match="dense_weight"):
        cart_loss(model(), ids, mask, codes, dense_weight=-1.0)


def test_a_model_without_head_initializes_as_before() -> None:
    """Adding the head (registered last) leaves every other weight of the same seed as is."""
    a, b = model(query_dim=0).state_dict(), model(query_dim=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
