"""Verifier: picks the accepted path through a draft tree, losslessly.

Glossary (used in names throughout):
  root      node 0, the last sampled token; its logits predict depth 1.
  node      one drafted token in the tree; its logits predict its children.
  path      root-to-node chain of nodes.
  accepted  a draft node whose token the target agrees with; accepted nodes
            form one path from the root.
  bonus     the token sampled from the target at the last accepted node (or
            the root): every step emits at least this one token.
  commit    keeping the accepted nodes' K/V at their final positions.
  rollback  dropping the rest (lowering the token count, freeing the tail).

Greedy: descend while some child's token equals the target argmax at its parent.
Sampling: recursive rejection sampling over each node's children (SpecInfer).
With r = the target distribution at the node, for each child x in order:
  * children drawn i.i.d. from the draft q: accept w.p. min(1, r(x)/q(x)),
    else r <- norm(max(r - q, 0));
  * deterministic children (n-gram, top-k): q is a point mass, so accept
    w.p. r(x), else r <- norm(r with x removed).
If no child is accepted the bonus token is sampled from r. Either way the
emitted token has exactly the target's distribution.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from specdec.draft_tree import DraftTree


@dataclass(slots=True)
class AcceptResult:
    accepted_nodes: list[int]            # accepted draft nodes, root excluded, in path order
    token_ids: list[int]                 # emitted tokens: accepted nodes' tokens + bonus
    source_nodes: list[int] = field(default_factory=list)  # node whose logits produced each token

    @property
    def num_accepted(self) -> int:
        return len(self.accepted_nodes)


def verify_greedy(tree: DraftTree, argmax_ids: list[int]) -> AcceptResult:
    """argmax_ids[i]: the target's argmax at node i (after penalties, bias and mask)."""
    node, accepted, sources = 0, [], [0]
    while True:
        want = argmax_ids[node]
        nxt = next((c for c in tree.children(node) if tree.token_ids[c] == want), None)
        if nxt is None:
            tokens = [tree.token_ids[n] for n in accepted] + [want]
            return AcceptResult(accepted, tokens, sources)
        accepted.append(nxt)
        sources.append(nxt)
        node = nxt


def verify_sampled(tree: DraftTree, target_probs: torch.Tensor,
                   generator: torch.Generator | None) -> AcceptResult:
    """target_probs: [N, V] fp32, the target distribution at every node (all settings applied)."""
    node, accepted, sources = 0, [], [0]
    while True:
        r = target_probs[node].clone()
        nxt = None
        for child in tree.children(node):
            x = tree.token_ids[child]
            if tree.draft_probs is not None:
                q = tree.draft_probs[node]
                accept_prob = min(1.0, float(r[x] / q[x])) if q[x] > 0 else 0.0
            else:
                q = None
                accept_prob = float(r[x])
            if _uniform(generator) < accept_prob:
                nxt = child
                break
            r = torch.clamp(r - q, min=0.0) if q is not None else r.index_fill(0, torch.tensor([x]), 0.0)
            total = r.sum()
            if total <= 0:       # r fully covered by rejected drafts: cannot happen with exact math
                r = target_probs[node].clone()
                break
            r = r / total
        if nxt is None:
            bonus = int(torch.multinomial(r, 1, generator=generator).item())
            tokens = [tree.token_ids[n] for n in accepted] + [bonus]
            return AcceptResult(accepted, tokens, sources)
        accepted.append(nxt)
        sources.append(nxt)
        node = nxt


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))
