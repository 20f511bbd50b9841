"""DraftTree: one canonical token tree with the three views its consumers need.

Node 0 is the root: the last sampled token, whose K/V are not in the pool yet.
`parents[i] < i`. A chain is a tree of width 1; plain decoding is the root alone.

Views:
  * kernel:   `ancestor_mask()` / `packed_mask()` + `depths` (positions = context + depth)
  * grammar:  `first_child()` / `next_sibling()` arrays (xgrammar's traversal order)
  * verifier: `children(i)`, `path_to(i)`
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from specdec.attention import pack_tree_mask

NO_NODE = -1


@dataclass(slots=True)
class DraftTree:
    token_ids: list[int]                       # [N] token of each node
    parents: list[int]                         # [N] parent node; parents[0] = NO_NODE
    # draft distribution at each node, from which its children were drawn i.i.d.;
    # None = children are deterministic proposals (n-gram, top-k), verified as point masses
    draft_probs: torch.Tensor | None = None    # [N, V] fp32
    depths: list[int] = field(default_factory=list)
    _children: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        assert n >= 1 and len(self.parents) == n and self.parents[0] == NO_NODE
        self.depths = [0] * n
        self._children = [[] for _ in range(n)]
        for i in range(1, n):
            p = self.parents[i]
            assert 0 <= p < i, f"parents[{i}] = {p} must be an earlier node"
            self.depths[i] = self.depths[p] + 1
            self._children[p].append(i)

    # ---- construction --------------------------------------------------------
    @classmethod
    def root_only(cls, root_token: int) -> "DraftTree":
        return cls([root_token], [NO_NODE])

    @classmethod
    def chain(cls, root_token: int, draft_tokens: list[int], draft_probs: torch.Tensor | None = None) -> "DraftTree":
        n = len(draft_tokens) + 1
        return cls([root_token, *draft_tokens], [NO_NODE, *range(n - 1)], draft_probs)

    @classmethod
    def from_token_paths(cls, root_token: int, paths: list[list[int]]) -> "DraftTree":
        """Merge root-to-leaf token paths (shared prefixes become shared nodes)."""
        tokens, parents, index = [root_token], [NO_NODE], {}
        for path in paths:
            _add_path(tokens, parents, index, path)
        return cls(tokens, parents)

    def with_path(self, path: list[int]) -> "DraftTree":
        """This tree plus one root-to-leaf token path: the path's prefix already in the tree is
        shared, the rest is appended (existing node ids unchanged). Deterministic trees only."""
        assert self.draft_probs is None, "merging needs point-mass drafts"
        tokens, parents = list(self.token_ids), list(self.parents)
        index = {(p, t): i for i, (p, t) in enumerate(zip(parents, tokens)) if i}
        _add_path(tokens, parents, index, path)
        return DraftTree(tokens, parents)

    # ---- views ---------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return len(self.token_ids)

    @property
    def num_draft_tokens(self) -> int:
        return len(self.token_ids) - 1

    def children(self, node: int) -> list[int]:
        return self._children[node]

    def path_to(self, node: int) -> list[int]:
        """Node ids from the root to `node`, inclusive."""
        path = []
        while node != NO_NODE:
            path.append(node)
            node = self.parents[node]
        return path[::-1]

    def ancestor_mask(self) -> torch.Tensor:
        """[N, N] bool: row i sees node j iff j is i or an ancestor of i."""
        n = self.num_nodes
        mask = torch.zeros(n, n, dtype=torch.bool)
        for i in range(n):
            mask[i, i] = True
            if i:
                mask[i] |= mask[self.parents[i]]
        return mask

    def packed_mask(self) -> torch.Tensor:
        """[N, ceil(N/32)] int32: the ancestor mask packed as the attention kernel reads it."""
        return pack_tree_mask(self.ancestor_mask())

    def first_child(self) -> list[int]:
        return [c[0] if c else NO_NODE for c in self._children]

    def next_sibling(self) -> list[int]:
        nxt = [NO_NODE] * self.num_nodes
        for kids in self._children:
            for a, b in zip(kids, kids[1:]):
                nxt[a] = b
        return nxt


def _add_path(tokens: list[int], parents: list[int], index: dict[tuple[int, int], int], path: list[int]) -> None:
    """Walk `path` down from the root, reusing nodes in `index` ((parent, token) -> node) and
    appending the rest to tokens / parents (and index)."""
    node = 0
    for tok in path:
        key = (node, tok)
        if key not in index:
            index[key] = len(tokens)
            tokens.append(tok)
            parents.append(node)
        node = index[key]
