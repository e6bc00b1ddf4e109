"""The prefix trie over all identifiers, stored as per-level CSR tensors.

Identifiers have a fixed length L; position ``l`` holds a level-local code in
``[0, level_sizes[l])``. Trie nodes at depth ``l`` are numbered ``0 .. n_l - 1`` (depth 0 is
the root, node 0). For each level ``l`` the trie stores, in CSR form:

- ``offsets[l]``  int64 [n_l + 1]: the edges of node ``u`` are ``offsets[l][u] : offsets[l][u+1]``
- ``tokens[l]``   int64 [E_l]: the level-local code on each edge, sorted within a node
- ``targets[l]``  int64 [E_l]: the child node at depth ``l + 1``, or, at the last level, the
  item row the complete identifier belongs to.

``allowed(level, nodes)`` returns the allowed next codes of a batch of nodes as a padded
[B, max_degree_l] tensor (gather, no Python loop over beams), the shape constrained beam
search needs: gather the level's log-probs at those codes, take the top-k of the flat
(beam, edge) grid, and follow ``targets`` to the next nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gcmr.errors import ArtifactError


@dataclass
class Trie:
    """Per-level CSR transition tables of the identifier prefix trie."""

    offsets: list[torch.Tensor]
    tokens: list[torch.Tensor]
    targets: list[torch.Tensor]
    level_sizes: list[int]

    @property
    def num_levels(self) -> int:
        return len(self.offsets)

    @property
    def max_degree(self) -> list[int]:
        return [int((o[1:] - o[:-1]).max().item()) if len(o) > 1 else 0 for o in self.offsets]

    @property
    def num_nodes(self) -> list[int]:
        return [len(o) - 1 for o in self.offsets]

    @classmethod
    def build(cls, codes: np.ndarray, level_sizes: list[int],
              rows: np.ndarray | None = None) -> Trie:
        """Build from unique identifiers ``codes`` [N, L] (row i = item i) in O(N L log N).

        ``rows`` [N] (optional) are the item rows the identifiers belong to, when ``codes``
        holds only some items (e.g. the live items of an index with deletions): the last
        level's targets are then ``rows[i]`` instead of ``i``.

        Raises ArtifactError when two items share an identifier (the trie needs unique ids).
        """
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != len(level_sizes):
            raise ArtifactError(f"codes must be [N, {len(level_sizes)}], got {codes.shape}")
        n, depth = codes.shape
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.shape != (n,):
                raise ArtifactError(f"rows must be [{n}], got {list(rows.shape)}")
        row_of = (lambda i: i) if rows is None else (lambda i: rows[i])
        for lvl, size in enumerate(level_sizes):
            if n and (codes[:, lvl].min() < 0 or codes[:, lvl].max() >= size):
                raise ArtifactError(f"codes at level {lvl} fall outside [0, {size})")
        order = np.lexsort(codes.T[::-1])  # sort rows lexicographically, first column primary
        sorted_codes = codes[order]
        # new_prefix[d][i]: row i starts a new prefix of length d + 1 in sorted order
        if n:
            diff = sorted_codes[1:] != sorted_codes[:-1]
            changed = np.logical_or.accumulate(diff, axis=1)  # prefix up to col d differs
            starts = np.vstack([np.ones((1, depth), dtype=bool), changed])
        else:
            starts = np.zeros((0, depth), dtype=bool)
        if n and not starts[:, -1].all():
            dup = int(np.flatnonzero(~starts[:, -1])[0])
            a, b = order[dup - 1], order[dup]
            raise ArtifactError(f"items {row_of(a)} and {row_of(b)} share identifier "
                                f"{codes[a].tolist()}; "
                                f"identifiers must be unique")
        # node id of each sorted row's prefix of length d + 1 (cumulative count of starts)
        node_of = np.cumsum(starts, axis=0) - 1  # [N, L]
        offsets, tokens, targets = [], [], []
        parent = np.zeros(n, dtype=np.int64)  # node at depth 0 is the root
        num_parent = 1
        for d in range(depth):
            edge_rows = np.flatnonzero(starts[:, d])  # one edge per new prefix of length d+1
            edge_parent = parent[edge_rows]
            counts = np.bincount(edge_parent, minlength=num_parent)
            off = np.zeros(num_parent + 1, dtype=np.int64)
            np.cumsum(counts, out=off[1:])
            offsets.append(torch.from_numpy(off))
            tokens.append(torch.from_numpy(sorted_codes[edge_rows, d].copy()))
            if d == depth - 1:
                leaf = order[edge_rows].astype(np.int64)
                targets.append(torch.from_numpy(leaf if rows is None else rows[leaf]))
            else:
                targets.append(torch.from_numpy(node_of[edge_rows, d].astype(np.int64)))
            parent = node_of[:, d]
            num_parent = len(edge_rows)
        return cls(offsets, tokens, targets, list(level_sizes))

    def allowed(self, level: int, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Allowed next codes of a batch of nodes at ``level``.

        Returns ``(codes, targets, valid)``, each [B, max_degree]: the allowed level-local codes
        (padding 0), the child node (or item row at the last level) they lead to (padding 0),
        and a bool mask of real edges.
        """
        off = self.offsets[level]
        deg = self._max_degree_cache(level)
        start = off[nodes]
        count = off[nodes + 1] - start
        idx = start.unsqueeze(-1) + torch.arange(deg, device=nodes.device)
        valid = torch.arange(deg, device=nodes.device) < count.unsqueeze(-1)
        idx = torch.where(valid, idx, torch.zeros_like(idx))
        return self.tokens[level][idx], self.targets[level][idx], valid

    def _max_degree_cache(self, level: int) -> int:
        cache = self.__dict__.setdefault("_deg_cache", {})
        if level not in cache:
            off = self.offsets[level]
            cache[level] = int((off[1:] - off[:-1]).max().item()) if len(off) > 1 else 0
        return cache[level]

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """Item row of each complete identifier [B, L], or -1 where it is not in the trie."""
        codes = torch.as_tensor(np.asarray(codes, dtype=np.int64))
        b = codes.shape[0]
        nodes = torch.zeros(b, dtype=torch.int64)
        alive = torch.ones(b, dtype=torch.bool)
        for lvl in range(self.num_levels):
            toks, tgts, valid = self.allowed(lvl, nodes)
            match = valid & (toks == codes[:, lvl:lvl + 1])
            alive &= match.any(dim=1)
            nodes = torch.where(alive, tgts[torch.arange(b), match.int().argmax(dim=1)], 0)
        return torch.where(alive, nodes, torch.full_like(nodes, -1)).numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {"level_sizes": torch.tensor(self.level_sizes, dtype=torch.int64)}
        for lvl in range(self.num_levels):
            out[f"trie.{lvl}.offsets"] = self.offsets[lvl]
            out[f"trie.{lvl}.tokens"] = self.tokens[lvl]
            out[f"trie.{lvl}.targets"] = self.targets[lvl]
        return out

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> Trie:
        try:
            sizes = [int(v) for v in state["level_sizes"].tolist()]
            parts = [(state[f"trie.{lvl}.offsets"], state[f"trie.{lvl}.tokens"],
                      state[f"trie.{lvl}.targets"]) for lvl in range(len(sizes))]
        except KeyError as exc:
            raise ArtifactError(f"trie tensors are incomplete: missing {exc}") from exc
        return cls([p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts], sizes)
