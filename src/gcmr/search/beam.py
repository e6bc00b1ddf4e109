"""Constrained beam search over the identifier trie, and exhaustive scoring for tests.

One decoding step for the whole batch of queries and all their beams at once:

1. the decoder runs on the newest token of every beam (self-attention from a KV cache; the
   cross-attention reads each query's encoder K/V, computed once in ``model.encode`` and shared
   by its beams through the query axis, never copied per beam);
2. ``trie.allowed(level, nodes)`` gathers each beam's allowed codes and child nodes as padded
   [B*W, deg] tensors; the candidates' scores are the beam score plus the level log-probability
   gathered at those codes, -inf where the edge is padding;
3. one ``topk`` over the flat (beam, edge) grid of each query picks the next beams; their trie
   nodes, codes and the KV cache rows follow by index.

Scores are sequence log-probabilities (sum of the full level log-softmax, not renormalized over
the allowed codes), so they equal :meth:`GenerativeRetrievalModel.sequence_log_prob` and
:func:`exhaustive_scores` of the same identifiers. Distinct beams are distinct trie prefixes, so
a result list has no duplicates and each identifier is exactly one item.
"""

from __future__ import annotations

import operator

import torch

from gcmr.errors import ConfigError, snippet
from gcmr.ids.trie import Trie
from gcmr.model.generative import BOS, GenerativeRetrievalModel

DEFAULT_BEAM = 10


def effective_beam(beam: int | None, k: int) -> int:
    """The beam width of a search for ``k`` results: the one rule every searcher follows.

    ``None`` means ``max(DEFAULT_BEAM, k)``; a beam narrower than ``k`` could not return ``k``
    distinct items, so it is widened to ``k`` (``max(beam, k)``). Callers that want to tell
    the user (the CLI) compare the result with what they asked for.
    """
    if beam is None:
        beam = DEFAULT_BEAM
    try:
        if isinstance(beam, bool) or isinstance(k, bool):
            raise TypeError
        beam, k = operator.index(beam), operator.index(k)
    except TypeError:
        raise ConfigError(f"beam and k must be integers, got beam={snippet(beam)}, "
                          f"k={snippet(k)}") from None
    if beam < 1 or k < 1:
        raise ConfigError(f"beam and k must be >= 1, got beam={beam}, k={k}")
    return max(beam, k)


@torch.no_grad()
def constrained_beam_search(model: GenerativeRetrievalModel, input_ids: torch.Tensor,
                            attention_mask: torch.Tensor, trie: Trie, *, beam: int,
                            k: int | None = None, enc=None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` identifiers of each query among those in ``trie``.

    Returns ``scores`` float32 [B, k] (sequence log-probabilities, best first), ``rows`` int64
    [B, k] (item rows from the trie's last level) and ``codes`` int64 [B, k, L]; where fewer than
    ``k`` identifiers exist, the tail is padded with -inf / -1 / -1. ``k`` defaults to ``beam``;
    ``k > beam`` searches with beam ``k`` (:func:`effective_beam`, the rule of every searcher).

    ``enc`` is ``model.encode(input_ids, attention_mask)`` when the caller already has it (the
    hybrid search reads the query vectors from the same pass).

    Runs without gradients and in the model's current mode (call ``model.eval()`` for
    deterministic results). To train through the results, rescore the returned codes with
    ``model.sequence_log_prob(input_ids, attention_mask, codes)`` (mask rows == -1).
    """
    k = beam if k is None else k
    width = effective_beam(beam, k)
    if list(trie.level_sizes) != list(model.level_sizes):
        raise ConfigError(f"the trie's level sizes {list(trie.level_sizes)} differ from the "
                          f"model's {list(model.level_sizes)}: model and index do not match")
    num_levels = model.num_levels
    b = input_ids.shape[0]
    device = input_ids.device
    if len(trie.targets[-1]) == 0:  # an empty index: nothing to find
        return (torch.full((b, k), float("-inf"), device=device),
                torch.full((b, k), -1, dtype=torch.int64, device=device),
                torch.full((b, k, num_levels), -1, dtype=torch.int64, device=device))
    trie_device = trie.offsets[0].device
    if enc is None:
        enc = model.encode(input_ids, attention_mask)
    query = torch.arange(b, device=device).unsqueeze(1)  # [B, 1]
    nodes = torch.zeros(b, 1, dtype=torch.int64, device=device)  # root
    scores = torch.zeros(b, 1, device=device)
    codes = torch.zeros(b, 1, 0, dtype=torch.int64, device=device)
    tokens = torch.full((b, 1), BOS, dtype=torch.int64, device=device)
    cache = None
    for level in range(num_levels):
        m = nodes.shape[1]
        hidden, cache = model.decode_step(enc, tokens, cache)
        logp = model.level_log_probs(hidden, level, enc).view(b * m, -1)
        allowed, targets, valid = (t.to(device) for t in trie.allowed(
            level, nodes.view(-1).to(trie_device)))  # [B*M, deg]; no-ops when on one device
        deg = allowed.shape[1]
        cand = (scores.view(-1, 1) + logp.gather(1, allowed)).masked_fill_(~valid, float("-inf"))
        keep = min(width if level < num_levels - 1 else k, m * deg)
        scores, pick = cand.view(b, m * deg).topk(keep, dim=1)  # sorted, best first
        parent = pick // deg
        flat_edge = (query * m + parent) * deg + pick % deg  # into the [B*M*deg] grid
        nodes = targets.view(-1)[flat_edge]
        new_codes = allowed.view(-1)[flat_edge]
        codes = torch.cat([codes.gather(1, parent.unsqueeze(-1).expand(-1, -1, level)),
                           new_codes.unsqueeze(-1)], dim=-1)
        if level < num_levels - 1:
            cache = cache.reorder((query * m + parent).view(-1))
            tokens = model.token_ids(level, new_codes)
    found = torch.isfinite(scores)
    rows = torch.where(found, nodes, -1)
    codes = codes.masked_fill(~found.unsqueeze(-1), -1)
    if scores.shape[1] < k:  # fewer identifiers in the whole trie than k
        pad = k - scores.shape[1]
        scores = torch.cat([scores, scores.new_full((b, pad), float("-inf"))], dim=1)
        rows = torch.cat([rows, rows.new_full((b, pad), -1)], dim=1)
        codes = torch.cat([codes, codes.new_full((b, pad, num_levels), -1)], dim=1)
    return scores, rows, codes


@torch.no_grad()
def exhaustive_scores(model: GenerativeRetrievalModel, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor, codes: torch.Tensor, *,
                      chunk: int = 4096) -> torch.Tensor:
    """Sequence log-probability of every identifier ``codes`` [N, L] for every query: [B, N].

    Brute force (N teacher-forced decodes per query, ``chunk`` query x identifier pairs at a
    time): the correctness oracle of beam search and a scorer for tiny corpora.
    """
    codes = torch.as_tensor(codes, dtype=torch.int64, device=input_ids.device)
    enc = model.encode(input_ids, attention_mask)
    b, n = input_ids.shape[0], codes.shape[0]
    step = max(1, chunk // max(b, 1))
    out = []
    for start in range(0, n, step):
        part = codes[start:start + step]
        out.append(model.score_codes(enc, part.unsqueeze(0).expand(b, -1, -1)))
    return torch.cat(out, dim=1) if out else torch.zeros(b, 0, device=input_ids.device)
