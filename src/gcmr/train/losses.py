"""Training losses: CART's (eqs. 6-8) token cross-entropy and R-Drop consistency term, and the
dense tower's symmetric InfoNCE (AVG's discriminative loss lives in :mod:`gcmr.train.avg`).

Logits are level-local and padded to the largest level, ``[..., L, Vmax]``, with -inf at codes
a level does not have (as :class:`~gcmr.model.GenerativeRetrievalModel` returns them). Those
entries get probability 0 and are masked out of the KL so they never produce NaNs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gcmr.errors import ConfigError


def _valid(logits: torch.Tensor, level_mask: torch.Tensor | None) -> torch.Tensor:
    """Bool mask of real codes: ``level_mask`` [L, Vmax] if given, else the finite logits."""
    return torch.isfinite(logits) if level_mask is None else level_mask.expand_as(logits)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *,
                        level_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of each level's code given the prefix (CART eq. 6, negated).

    ``logits`` [..., L, Vmax], ``targets`` [..., L] level-local codes. ``level_mask`` [L, Vmax]
    (True = the level has that code) masks logits that are not already -inf.
    """
    if level_mask is not None:
        logits = logits.masked_fill(~_valid(logits, level_mask), float("-inf"))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def rdrop_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, *,
             level_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Bidirectional KL of two dropout passes (R-Drop, CART eq. 7), mean over tokens:

    ``1/2 [KL(p_a || p_b) + KL(p_b || p_a)] = 1/2 sum_v (p_a - p_b)(log p_a - log p_b)``.

    Zero for identical distributions, symmetric in its arguments. Codes outside a level
    (``level_mask`` False, or -inf logits) are excluded.
    """
    valid = _valid(logits_a, level_mask) & _valid(logits_b, level_mask)
    log_a = torch.log_softmax(logits_a.float().masked_fill(~valid, float("-inf")), dim=-1)
    log_b = torch.log_softmax(logits_b.float().masked_fill(~valid, float("-inf")), dim=-1)
    # zero the -inf entries before subtracting: (-inf) - (-inf) would be NaN, also in backward
    diff = (log_a - log_b.masked_fill(~valid, 0.0)).masked_fill(~valid, 0.0)
    per_token = 0.5 * ((log_a.exp() - log_b.exp()) * diff).sum(dim=-1)
    return per_token.mean()


def cart_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, codes: torch.Tensor,
              *, omega: float = 0.15, items: torch.Tensor | None = None,
              rows: torch.Tensor | None = None,
              dense_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """CART eq. 8: ``CE + omega * KL`` for a batch of (query, identifier) pairs, plus
    ``dense_weight * InfoNCE`` of the model's query-vector head when ``dense_weight > 0``.

    With ``omega > 0`` the batch is concatenated with itself and run in one forward pass, so the
    two halves see independent dropout masks (R-Drop); CE is the mean over both passes. With
    ``omega == 0`` it is one plain pass. The InfoNCE term (:func:`info_nce`, the dense tower's
    loss) scores the first pass's query vectors against ``items`` [B, D] (the pairs' item
    embeddings, normalized; ``rows`` [B] their corpus rows), from the same encoder output the
    decoder reads. Returns the loss and its parts as floats for logging.
    """
    if omega < 0:
        raise ConfigError(f"omega must be >= 0, got {omega}")
    if dense_weight < 0:
        raise ConfigError(f"dense_weight must be >= 0, got {dense_weight}")
    if dense_weight > 0:
        return _joint_loss(model, input_ids, attention_mask, codes, omega=omega, items=items,
                           rows=rows, dense_weight=dense_weight)
    if omega == 0:
        ce = token_cross_entropy(model(input_ids, attention_mask, codes), codes)
        return ce, {"loss": float(ce.detach()), "ce": float(ce.detach())}
    b = input_ids.shape[0]
    logits = model(torch.cat([input_ids, input_ids]), torch.cat([attention_mask, attention_mask]),
                   torch.cat([codes, codes]))
    ce = token_cross_entropy(logits, torch.cat([codes, codes]))
    kl = rdrop_kl(logits[:b], logits[b:])
    loss = ce + omega * kl
    return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()),
                  "kl": float(kl.detach())}


def _joint_loss(model, input_ids, attention_mask, codes, *, omega: float, items, rows,
                dense_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """CART's loss and the query head's InfoNCE from one encoder pass (see :func:`cart_loss`)."""
    if items is None or rows is None:
        raise ConfigError("the dense term needs the batch's item embeddings and rows")
    b = input_ids.shape[0]
    passes = 2 if omega > 0 else 1
    if passes == 2:
        input_ids = torch.cat([input_ids, input_ids])
        attention_mask = torch.cat([attention_mask, attention_mask])
        codes = torch.cat([codes, codes])
    enc = model.encode(input_ids, attention_mask)
    logits = model.decode_logits(enc, codes)
    ce = token_cross_entropy(logits, codes)
    loss = ce
    parts = {"ce": float(ce.detach())}
    if passes == 2:
        kl = rdrop_kl(logits[:b], logits[b:])
        loss = loss + omega * kl
        parts["kl"] = float(kl.detach())
    queries = model.query_vectors(enc)[:b]
    nce = info_nce(queries, items, rows, model.logit_scale)
    loss = loss + dense_weight * nce
    parts["nce"] = float(nce.detach())
    parts["loss"] = float(loss.detach())
    return loss, parts


def info_nce(queries: torch.Tensor, items: torch.Tensor, rows: torch.Tensor,
             logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives.

    ``queries`` [B, D] and ``items`` [B, D] normalized (``items[i]`` is the item of pair ``i``),
    ``rows`` [B] item rows. Columns are the batch's distinct items; query -> item is a
    cross-entropy over them, item -> query treats every query of the item as a positive
    (multi-positive log-sum-exp). The loss is the mean of the two directions.

    Under torchrun the batch is that of all ranks (:func:`gcmr.train.distributed.gather_batch`,
    with gradient), so the negatives are those one process with the global batch sees.
    """
    from gcmr.train.distributed import gather_batch

    queries, items, rows = gather_batch(queries), gather_batch(items), gather_batch(rows)
    uniq, inverse = torch.unique(rows, return_inverse=True)
    first = torch.zeros(len(uniq), dtype=torch.long, device=rows.device).scatter_(
        0, inverse, torch.arange(len(rows), device=rows.device))  # one pair index per item
    logits = logit_scale * queries @ items[first].T  # [B, U]
    q2i = F.cross_entropy(logits, inverse)
    lt = logits.T  # [U, B]
    pos = inverse.unsqueeze(0) == torch.arange(len(uniq), device=rows.device).unsqueeze(1)
    i2q = (torch.logsumexp(lt, dim=1) - torch.logsumexp(lt.masked_fill(~pos, float("-inf")),
                                                          dim=1)).mean()
    return 0.5 * (q2i + i2q)
