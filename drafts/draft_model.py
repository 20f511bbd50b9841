"""Draft-model proposer: a smaller model with the target's tokenizer drafts a chain or a tree.

The draft has its own K/V tensor in the KVPool, indexed by the SAME block ids
as the target's (one allocation, one block table per request). Per request it
tracks how many tokens its K/V cover; each step it first catches up on the
tokens committed since (causal chunk ending at the root), then expands the tree
depth by depth: every frontier node proposes its top-`topk` children and the
best `width` candidates by cumulative draft log-probability become the next
frontier (width 1 = a chain). Node i is written to lookahead slot
`num_computed + i`, exactly where the target verifies it, so commit moves the
same slots in both pools.

Each depth re-runs all nodes drafted so far with the tree mask, rather than
only the new ones: on CPU a forward of a few tokens costs about the same as
one, and it keeps the attention contract (keys = cached prefix + the new
tokens) unchanged.

Greedy requests and trees draft deterministically (the verifier treats drafts
as point masses). Sampled chains draw each child from the draft distribution
q and hand q to the verifier for speculative sampling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from specdec.attention import pack_tree_mask
from specdec.draft_tree import NO_NODE, DraftTree
from specdec.model_runner import ModelRunner, Segment, causal_segment, pack_segments
from specdec.request import Request
from specdec.sampler import apply_token_bitmask, probs_from_logits
from specdec.verifier import AcceptResult


@dataclass(slots=True)
class DraftState:
    num_computed: int = 0      # token_ids[:num_computed] have K/V in the draft's pool tensor
    num_forwarded: int = 0     # nodes 0..num_forwarded-1 of the last tree have draft K/V


@dataclass(slots=True)
class _Building:
    """A tree under construction for one request."""
    req: Request
    depth_budget: int
    tokens: list[int]
    parents: list[int]
    cum_logprob: list[float]
    frontier: list[int]
    draft_probs: list[torch.Tensor | None]


class DraftModelProposer:
    def __init__(self, runner: ModelRunner, num_speculative_tokens: int = 4, width: int = 1,
                 topk: int | None = None):
        assert num_speculative_tokens >= 1 and width >= 1
        self.runner = runner
        self.k = num_speculative_tokens   # tree depth
        self.width = width                # frontier kept per depth (1 = chain)
        self.topk = topk or width         # children proposed per frontier node

    def max_lookahead(self, req: Request) -> int:
        return self.k * self.width

    def reset(self, req: Request) -> None:
        req.spec = DraftState()

    # ---- propose ------------------------------------------------------------------
    @torch.inference_mode()
    def propose(self, reqs: list[Request], max_nodes: list[int]) -> list[DraftTree]:
        if not reqs:
            return []
        for r in reqs:
            if not isinstance(r.spec, DraftState):
                r.spec = DraftState()
        # 1) catch up: the draft's K/V up to and including the root; logits at the root
        segs = [causal_segment(r, r.spec.num_computed, r.num_tokens - r.spec.num_computed, True)
                for r in reqs]
        root_logits = self._forward(segs)
        trees = [_Building(r, min(self.k, budget // self.width), [r.token_ids[-1]], [NO_NODE],
                           [0.0], [0], [None]) for r, budget in zip(reqs, max_nodes)]
        for r in reqs:
            r.spec.num_computed = r.num_tokens
        frontier_logits = [root_logits[i:i + 1] for i in range(len(reqs))]
        # 2) expand depth by depth
        for depth in range(1, self.k + 1):
            active = [i for i, t in enumerate(trees) if depth <= t.depth_budget]
            if not active:
                break
            for i in active:
                self._expand(trees[i], frontier_logits[i])
            growing = [i for i in active if depth < trees[i].depth_budget]
            if not growing:
                break
            logits = self._forward([self._tree_segment(trees[i]) for i in growing], per_segment=True)
            frontier_logits = {i: lg for i, lg in zip(growing, logits)}
        out = []
        for t in trees:
            t.req.spec.num_forwarded = self._num_forwarded(t)
            probs = None
            if any(p is not None for p in t.draft_probs):
                probs = torch.stack([p if p is not None else torch.zeros_like(_first(t.draft_probs))
                                     for p in t.draft_probs])
            out.append(DraftTree(t.tokens, t.parents, probs))
        return out

    def _expand(self, t: _Building, logits: torch.Tensor) -> None:
        """Add the next depth: children of every frontier node, best `width` kept."""
        params = t.req.params
        candidates = []   # (cum_logprob, parent, token, q at parent or None)
        for row, node in zip(logits, t.frontier):
            if t.req.grammar is not None:
                # grammar-aware drafting: never spend a slot on a token the grammar rejects
                mask = t.req.grammar.draft_bitmask(_path_tokens(t, node))
                if not bool(mask.any()):
                    continue
                row = apply_token_bitmask(row[None].float(), mask)[0]
            logprobs = torch.log_softmax(row.float(), dim=-1)
            if not params.is_greedy and self.width == 1:
                # sampled chain: draw from q so the verifier can use min(1, p/q)
                q = probs_from_logits(row, params)
                tok = int(torch.multinomial(q, 1, generator=t.req.generator).item())
                candidates.append((t.cum_logprob[node] + float(logprobs[tok]), node, tok, q))
                continue
            vals, toks = logprobs.topk(self.topk)
            for v, tok in zip(vals.tolist(), toks.tolist()):
                if v == float("-inf"):
                    break                      # fewer tokens allowed than topk
                candidates.append((t.cum_logprob[node] + v, node, tok, None))
        candidates.sort(key=lambda c: -c[0])
        t.frontier = []
        for cum, parent, tok, q in candidates[:self.width]:
            if q is not None:
                t.draft_probs[parent] = q
            t.frontier.append(len(t.tokens))
            t.tokens.append(tok)
            t.parents.append(parent)
            t.cum_logprob.append(cum)
            t.draft_probs.append(None)

    def _tree_segment(self, t: _Building) -> Segment:
        """All drafted nodes (root excluded: its K/V are in the pool) with their ancestor mask."""
        tree = DraftTree(t.tokens, t.parents)
        base = t.req.num_computed_tokens
        nodes = list(range(1, tree.num_nodes))
        mask = tree.ancestor_mask()[1:, 1:]
        rows = [i - 1 for i in t.frontier]
        return Segment([t.tokens[i] for i in nodes], [base + tree.depths[i] for i in nodes], base + 1,
                       t.req.block_table, pack_tree_mask(mask), rows)

    @staticmethod
    def _num_forwarded(t: _Building) -> int:
        # nodes outside the last frontier were fed through the draft (the root by catch-up)
        return len(t.tokens) - len(t.frontier) if len(t.tokens) > 1 else 1

    def _forward(self, segs: list[Segment], per_segment: bool = False):
        inputs = pack_segments(segs, self.runner.block_size, self.runner.device)
        logits = self.runner.forward(inputs)
        if not per_segment:
            return logits
        return [logits[inputs.cu_logits[b]:inputs.cu_logits[b + 1]] for b in range(len(segs))]

    # ---- commit -----------------------------------------------------------------------
    def commit(self, req: Request, tree: DraftTree, result: AcceptResult) -> tuple[list[int], list[int]]:
        """Accepted nodes that have draft K/V move to their committed lookahead indices."""
        state: DraftState = req.spec
        src, dst = [], []
        kept = 0
        for k, node in enumerate(result.accepted_nodes, start=1):
            if node >= state.num_forwarded:
                break
            if node != k:
                src.append(node)
                dst.append(k)
            kept += 1
        # root (index 0) plus the accepted nodes the draft had computed
        state.num_computed = req.num_computed_tokens + 1 + kept
        return src, dst


def _path_tokens(t: _Building, node: int) -> list[int]:
    """Tokens on the path root -> node, root excluded."""
    out = []
    while node > 0:
        out.append(t.tokens[node])
        node = t.parents[node]
    return out[::-1]


def _first(items):
    return next(x for x in items if x is not None)
