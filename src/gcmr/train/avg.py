"""AVG token-to-voken generation (Li et al., section 3.3, eqs. 7-10): the generative loss plus
the discrimination-modified loss over beam-searched candidates, and the voken embedding init.

``L = L_gen + dis_weight * L_dis``

- ``L_gen`` (eqs. 7-8): token cross-entropy of the positive identifier given the query (plus,
  when ``omega > 0``, CART's R-Drop consistency term; AVG itself has none, so ``omega = 0``
  reproduces the paper).
- ``L_dis`` (eqs. 9-10): constrained beam search (width ``b``) on each training query gives the
  identifiers the model currently prefers; the positive replaces the lowest-ranked beam when the
  search missed it; each candidate's score is its sequence log-probability ``sum_l log p(c_l |
  c_<l, q)`` recomputed WITH gradient; ``L_dis`` is the softmax cross-entropy over the ``b``
  scores with the positive as the target. It pushes the positive above the hard negatives the
  decoder would actually return, which token-level CE never looks at.

Everything is batched: one no-grad beam search over the batch, then one teacher-forced decoder
pass over all ``B * b`` candidates that reads each query's encoder output once (the model's
cross-attention shares it between a query's candidates). The positive is always one of the
candidates, so ``L_gen`` comes from the same pass: no separate CE forward. Per step this costs
about one encoder pass plus ``L`` incremental decoding steps over ``B * b`` beams (the search)
and one decoder pass over ``B * b`` sequences with backward (the rescoring), versus CART's one
encoder + decoder pass over ``2B`` sequences (R-Drop). ``b = 1`` makes ``L_dis`` zero (the
positive is the only candidate); ``dis_weight = 0`` skips the search (ablation "w/o L_dis").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gcmr.errors import ConfigError
from gcmr.progress import note
from gcmr.train.losses import rdrop_kl

__all__ = ["avg_loss", "discriminative_candidates", "discriminative_loss",
           "init_voken_embeddings", "voken_projection"]


# ----------------------------------------------------------------------------- L_dis


@torch.no_grad()
def discriminative_candidates(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              codes: torch.Tensor, *, trie: Any, beam: int
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates of L_dis for a batch: ``(cands [B, b, L], target [B], valid [B, b],
    inserted [B])``.

    ``cands`` are the ``b`` best identifiers of constrained beam search (run in eval mode, so
    the candidates are what the model would return at test time; the mode is restored), with
    the positive ``codes[i]`` written over the last (lowest-scoring or padding) beam of every
    query whose beams missed it (``inserted``). ``target`` is the positive's column; ``valid``
    marks real candidates (a trie with fewer than ``b`` identifiers pads with -1 codes, which
    are replaced by code 0 so they can be decoded, and masked out of the softmax).
    """
    from gcmr.search.beam import constrained_beam_search

    if beam < 1:
        raise ConfigError(f"dis_beam must be >= 1, got {beam}")
    was_training = model.training
    model.eval()
    try:
        _, _, cands = constrained_beam_search(model, input_ids, attention_mask, trie,
                                              beam=beam, k=beam)
    finally:
        model.train(was_training)
    cands = cands.to(codes.device)
    hit = (cands == codes.unsqueeze(1)).all(dim=-1)  # [B, b]
    inserted = ~hit.any(dim=1)
    cands[inserted, -1] = codes[inserted]
    hit[inserted, -1] = True
    valid = (cands >= 0).all(dim=-1)
    target = hit.to(torch.int64).argmax(dim=1)
    return cands.clamp_min(0), target, valid, inserted


def discriminative_loss(scores: torch.Tensor, target: torch.Tensor,
                        valid: torch.Tensor | None = None) -> torch.Tensor:
    """AVG eq. 10: softmax cross-entropy over the candidates' sequence scores [B, b] with the
    positive column ``target`` [B]; invalid (padding) candidates get no probability."""
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))
    return F.cross_entropy(scores.float(), target)


def avg_loss(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             codes: torch.Tensor, *, trie: Any, omega: float = 0.0, beam: int = 10,
             dis_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """``L_gen + dis_weight * L_dis`` (AVG eqs. 7-10) for a batch of (query, identifier) pairs.

    ``codes`` [B, L] are the positives' level-local codes, ``trie`` the index trie the beam
    search is constrained to. ``omega > 0`` adds CART's R-Drop term to ``L_gen`` (the batch is
    run twice in one pass; both passes score their candidates). Returns the loss and its parts
    (``loss``, ``ce``, ``dis``, ``kl``, ``dis_inserted`` = fraction of queries whose positive
    the beams missed, ``dis_pos_prob`` = mean softmax probability of the positive) as floats.
    """
    if omega < 0:
        raise ConfigError(f"omega must be >= 0, got {omega}")
    if dis_weight < 0:
        raise ConfigError(f"dis_weight must be >= 0, got {dis_weight}")
    b = input_ids.shape[0]
    parts: dict[str, float] = {}
    if dis_weight > 0 and beam > 1:
        cands, target, valid, inserted = discriminative_candidates(
            model, input_ids, attention_mask, codes, trie=trie, beam=beam)
        parts["dis_inserted"] = float(inserted.float().mean())
    else:  # nothing to discriminate: only the positive is decoded
        cands = codes.unsqueeze(1)
        target = torch.zeros(b, dtype=torch.int64, device=codes.device)
        valid = torch.ones(b, 1, dtype=torch.bool, device=codes.device)
    passes = 2 if omega > 0 else 1
    if passes == 2:
        input_ids = torch.cat([input_ids, input_ids])
        attention_mask = torch.cat([attention_mask, attention_mask])
        cands, target, valid = torch.cat([cands, cands]), torch.cat([target, target]), \
            torch.cat([valid, valid])
    # one decoder pass over every candidate of every query, encoder output shared per query
    logits = model.decode_logits(model.encode(input_ids, attention_mask), cands)  # [B', b, L, V]
    logp = torch.log_softmax(logits.float(), dim=-1)
    token_logp = logp.gather(-1, cands.unsqueeze(-1)).squeeze(-1)  # [B', b, L]
    rows = torch.arange(len(target), device=target.device)
    ce = -token_logp[rows, target].mean()  # L_gen: mean token CE of the positive
    loss = ce
    parts["ce"] = float(ce.detach())
    if passes == 2:
        kl = rdrop_kl(logits[:b][rows[:b], target[:b]], logits[b:][rows[:b], target[b:]])
        loss = loss + omega * kl
        parts["kl"] = float(kl.detach())
    if cands.shape[1] > 1:
        scores = token_logp.sum(dim=-1)  # eq. 9: sequence score = sum of token log-probs
        dis = discriminative_loss(scores, target, valid)
        loss = loss + dis_weight * dis
        parts["dis"] = float(dis.detach())
        parts["dis_pos_prob"] = float(torch.exp(-F.cross_entropy(
            scores.detach().masked_fill(~valid, float("-inf")), target, reduction="none")).mean())
    parts["loss"] = float(loss.detach())
    return loss, parts


# ----------------------------------------------------------------------------- voken embedding


def voken_projection(latent_dim: int, d_model: int, *, seed: int) -> torch.Tensor:
    """A fixed random projection ``W`` [d_model, latent_dim] with orthonormal columns (rows when
    ``latent_dim > d_model``), from a private generator.

    Orthonormal columns make ``e -> W e`` an isometry: the voken embeddings keep the codebook's
    inner products and distances exactly, which is what the init is for (similar vokens start
    with similar embeddings). A least-squares fit needs a target the model does not have before
    training, and a learned projection would need the codebook at every step; a fixed isometry
    is the simplest map that transfers the codebook geometry and nothing else.
    """
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(max(d_model, latent_dim), min(d_model, latent_dim), generator=gen)
    q, r = torch.linalg.qr(a)  # q: orthonormal columns
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # unique (sign-fixed) factor
    return q if d_model >= latent_dim else q.T


@torch.no_grad()
def init_voken_embeddings(model: Any, index: Any, *, enabled: bool = True) -> dict[str, Any]:
    """AVG's voken embedding: the decoder-input embedding of voken ``c`` at step ``l`` becomes
    ``s * W @ codebook_l[c]`` (``W`` from :func:`voken_projection`, ``s`` matching the RMS of
    the random init so the rest of the network sees the scale it was initialized for).

    With a shared codebook every step gets the same vector for the same voken; the model's
    level (position) embedding tells the steps apart. The unique-counter level keeps its random
    init (it has no codebook vector); with ``tie_output_embeddings`` the output layer shares the
    init. ``enabled=False`` (ablation "w/o voken embedding") leaves the random Xavier init. An
    index whose scheme has no voken codebook (e.g. CART) is noted and left random. Returns what
    was done, for the log.
    """
    if not enabled:
        return {"voken_init": "random"}
    scheme = getattr(index, "scheme", None)
    if not hasattr(scheme, "voken_vectors"):
        note(f"index scheme {index.config.scheme!r} has no voken codebook: identifier "
             f"embeddings keep their random init (voken embedding init needs an avg index)")
        return {"voken_init": "random", "reason": "no voken codebook"}
    books = scheme.voken_vectors()  # [M, N, d]
    table = _embedding_table(model)
    levels = books.shape[0]
    sizes = list(model.level_sizes)
    if sizes[:levels] != [books.shape[1]] * levels:
        raise ConfigError(f"the model's level sizes {sizes} do not match the index's voken "
                          f"codebook ({levels} steps of {books.shape[1]})")
    d_model = table.shape[1]
    w = voken_projection(books.shape[2], d_model, seed=getattr(model.config, "seed", 0))
    vecs = books.to(table.device, torch.float32) @ w.T.to(table.device)  # [M, N, d_model]
    rows = torch.cat([_voken_rows(model, lvl, books.shape[1], table.device)
                      for lvl in range(levels)])
    target_rms = float(table[rows].float().pow(2).mean().sqrt())
    rms = float(vecs.pow(2).mean().sqrt())
    scale = target_rms / rms if rms > 0 else 1.0
    table[rows] = (vecs.reshape(-1, d_model) * scale).to(table.dtype)
    return {"voken_init": "codebook", "levels": levels, "scale": scale}


def _embedding_table(model: Any) -> torch.Tensor:
    """The decoder-input identifier embedding weight (our model or the T5 backbone)."""
    if hasattr(model, "voken_embedding_weight"):
        return model.voken_embedding_weight()
    return model.code_embedding.weight


def _voken_rows(model: Any, level: int, size: int, device: torch.device) -> torch.Tensor:
    """Rows of the embedding table holding codes ``0 .. size - 1`` of ``level``."""
    return model.token_ids(level, torch.arange(size, device=device))
