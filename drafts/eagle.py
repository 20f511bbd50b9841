"""EAGLE proposer: the draft head (eagle_head.py) grows a dynamic tree from the target's features.

Per request the proposer keeps the target features of committed tokens it has not fed to the
head yet (the engine hands them over after every step: `observe`) and how far the head's own
K/V reach (`num_computed`: draft rows 0..num_computed-1 are in the pool). Draft row p pairs the
target's features of token p with token p+1 (see eagle_head.py), so with n tokens of which the
last (the root) is not yet computed by the target, the head can cover rows 0..n-2, and row
n-2's output predicts the root's children.

A proposal for a budget of N nodes (EAGLE-2 dynamic tree; the cost-aware policy picks N,
`"adaptive": False` asks for depth x topk):
  1. catch up: one forward over rows num_computed..n-2 with the TRUE target features (rows
     drafted in the previous step with predicted features are recomputed, so commit moves
     nothing in the draft pool);
  2. depth 1: the root's top-k children (k <= N); the best w of them are the first frontier,
     w = min(topk, N // depth) so that every forwarded node fits a reserved slot;
  3. depth d <= min(depth, N): the frontier is forwarded (input: its parent's output a, its
     own token), each frontier node proposes top-k children, and the w best of all candidates
     of that depth by cumulative draft log-probability become the next frontier;
  4. the N best of all proposed nodes by cumulative log-probability form the tree (a child
     never scores above its parent, so the choice is a connected tree).

Forwarded node j (1-based, in forwarding order) keeps its draft K/V in lookahead slot
num_computed_tokens + j - 1, at rotary position (n - 2) + depth; the target verifies the
chosen tree in the same reserved slots afterwards (its own pool). A depth forwards only its
new frontier nodes, on the row path: keys = the committed rows + the node's tree ancestors
(already in their slots) + itself.

Drafts are deterministic top-k proposals, verified as point masses, so greedy output equals
plain decoding and sampled output keeps the target's distribution (specdec/verifier.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from drafts.eagle_head import EagleHead
from specdec.draft_tree import NO_NODE, DraftTree
from specdec.model_runner import Segment, pack_segments, slot_of
from specdec.row_attention import rows_from_slots
from specdec.request import Request
from specdec.verifier import AcceptResult


@dataclass(slots=True)
class EagleState:
    num_computed: int = 0                 # draft rows [0, num_computed) have K/V in the draft pool
    feat_start: int = 0                   # position of the first pending target feature
    pending: list[torch.Tensor] = field(default_factory=list)   # chunks of [n, 3H] fp32

    @property
    def feat_end(self) -> int:
        return self.feat_start + sum(len(p) for p in self.pending)


@dataclass(slots=True)
class _Tree:
    req: Request
    depth_budget: int
    max_nodes: int
    width: int                            # frontier size per depth
    tokens: list[int]                     # target ids; node 0 = root
    parents: list[int]
    scores: list[float]                   # cumulative draft log-probability
    depths: list[int]
    forwarded: list[int] = field(default_factory=list)   # node ids with draft K/V, in slot order
    slot: dict[int, int] = field(default_factory=dict)   # forwarded node -> its pool slot
    context_slots: torch.Tensor | None = None             # slots of the committed positions
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)   # node -> head output a [H]
    frontier: list[int] = field(default_factory=list)


class EagleProposer:
    budget_counts_nodes = True            # the policy's budget is N nodes: the best N of the tree

    def __init__(self, head: EagleHead, embed, rope, kv: torch.Tensor, block_size: int, attn_backend,
                 device: torch.device | str, depth: int = 4, topk: int = 4):
        if depth < 1 or topk < 1:
            raise ValueError("EAGLE depth (num_speculative_tokens) and topk (tree_width) must be >= 1")
        self.head, self.embed, self.rope = head, embed, rope
        self.kv, self.block_size, self.attn, self.device = kv, block_size, attn_backend, device
        self.depth, self.topk = depth, topk
        self.capture_layers = tuple(head.cfg.aux_layers)
        self.one_off_seconds = 0.0            # catch-up time since the engine last asked

    def max_lookahead(self, req: Request) -> int:
        return self.depth * self.topk

    def reset(self, req: Request) -> None:
        req.spec = EagleState()

    # ---- features from the target ----------------------------------------------------
    def observe(self, req: Request, start: int, features: torch.Tensor) -> None:
        """The target computed (and committed) tokens start..start+len-1; their features [len, 3H]."""
        st = req.spec if isinstance(req.spec, EagleState) else None
        if st is None:
            st = req.spec = EagleState(num_computed=start, feat_start=start)
        if start != st.feat_end:
            # a gap (prefix-cache hit: the target skipped those tokens) or a recompute: start over
            # from here; skipped rows keep whatever draft K/V their shared blocks hold
            st.pending, st.feat_start, st.num_computed = [], start, start
        st.pending.append(features)

    def _take_features(self, st: EagleState, lo: int, hi: int) -> torch.Tensor:
        """Features of positions lo..hi-1 (must be pending); drops everything before hi."""
        feats = torch.cat(st.pending) if len(st.pending) > 1 else st.pending[0]
        out = feats[lo - st.feat_start:hi - st.feat_start]
        st.pending = [feats[hi - st.feat_start:]]
        st.feat_start = hi
        return out

    # ---- propose ------------------------------------------------------------------------
    @torch.inference_mode()
    def propose(self, reqs: list[Request], max_nodes: list[int]) -> list[DraftTree]:
        out: list[DraftTree | None] = [None] * len(reqs)
        ready, segs, feats = [], [], []
        for i, r in enumerate(reqs):
            st = r.spec
            n = r.num_tokens
            lo = max(st.num_computed, st.feat_start) if isinstance(st, EagleState) else n
            if lo > n - 2 or st.feat_end < n - 1:
                out[i] = DraftTree.root_only(r.token_ids[-1])   # no features yet: nothing to draft
                continue
            feats.append(self._take_features(st, lo, n - 1))
            segs.append(Segment(r.token_ids[lo + 1:n], list(range(lo, n - 1)), lo, r.block_table, None,
                                [n - 2 - lo]))
            st.num_computed = n - 1
            ready.append(i)
        if not ready:
            return out
        t0 = time.perf_counter()
        inputs = pack_segments(segs, self.block_size, self.device)
        a = self._forward(self.head.fuse(torch.cat(feats)), inputs)
        if max(len(s.token_ids) for s in segs) > self.depth + 1:
            # more rows than a drafting step leaves behind: the head catches up after a prompt or
            # a pause in drafting, a one-off the engine keeps out of its per-step cost model
            self.one_off_seconds += time.perf_counter() - t0
        root_out = a.index_select(0, inputs.logits_indices)
        root_logp = torch.log_softmax(self.head.logits(root_out), dim=-1)
        trees = []
        for j, i in enumerate(ready):
            r = reqs[i]
            depth = min(self.depth, max_nodes[i])
            # frontier width: (depth - 1) frontiers are forwarded, each node into one of the
            # request's max_nodes reserved lookahead slots, so width * (depth - 1) < max_nodes
            width = max(1, min(self.topk, max_nodes[i] // depth))
            t = _Tree(r, depth, max_nodes[i], width, [r.token_ids[-1]], [NO_NODE], [0.0], [0])
            t.outputs[0] = root_out[j]
            self._add_children(t, [0], root_logp[j:j + 1])
            trees.append(t)
        for depth in range(2, self.depth + 1):
            growing = [t for t in trees if depth <= t.depth_budget and t.frontier]
            if not growing:
                break
            self._forward_frontiers(growing)
        for i, t in zip(ready, trees):
            out[i] = _select(t)
        return out

    def _add_children(self, t: _Tree, parents: list[int], logp: torch.Tensor) -> None:
        """Each parent's top-k children join the candidates (k <= the budget N: past N better
        nodes nothing can be chosen); the best `t.width` of them become the frontier."""
        k = min(self.topk, t.max_nodes)
        vals, ids = logp.topk(min(k, logp.shape[-1]), dim=-1)
        target_ids = self.head.draft_to_target(ids).tolist()
        cands = []
        for p, row_v, row_t in zip(parents, vals.tolist(), target_ids):
            for v, tok in zip(row_v, row_t):
                node = len(t.tokens)
                t.tokens.append(tok)
                t.parents.append(p)
                t.scores.append(t.scores[p] + v)
                t.depths.append(t.depths[p] + 1)
                cands.append(node)
        cands.sort(key=lambda n: -t.scores[n])
        t.frontier = cands[:t.width]

    def _forward_frontiers(self, trees: list[_Tree]) -> None:
        """Forward every tree's frontier (only the new nodes: the ones forwarded before keep their
        draft K/V in their slots) on the row path; expand the frontier's children."""
        ids, positions, slots, row_slots, hidden = [], [], [], [], []
        for t in trees:
            base, table = t.req.num_computed_tokens, t.req.block_table
            if t.context_slots is None:      # committed keys 0..base-1, the same for every depth
                t.context_slots = _slots(table, 0, base, self.block_size)
            for n in t.frontier:
                t.slot[n] = slot_of(table, base + len(t.forwarded), self.block_size)
                t.forwarded.append(n)
                path, m = [], n
                while m != 0:
                    path.append(t.slot[m])
                    m = t.parents[m]
                row_slots.append(torch.cat([t.context_slots, torch.tensor(path[::-1], dtype=torch.int64)]))
                ids.append(t.tokens[n])
                positions.append(base - 1 + t.depths[n])
                slots.append(t.slot[n])
                hidden.append(t.outputs[t.parents[n]])
        rows = rows_from_slots(row_slots, list(range(len(row_slots))), self.device)
        emb = self.embed(torch.tensor(ids, device=self.device)).float()
        a = self.head.forward_rows(torch.stack(hidden), emb, torch.tensor(positions, device=self.device),
                                   torch.tensor(slots, device=self.device), rows, self.rope, self.kv)
        logp = torch.log_softmax(self.head.logits(a), dim=-1)
        lo = 0
        for t in trees:
            frontier = t.frontier
            hi = lo + len(frontier)
            for k, n in enumerate(frontier):
                t.outputs[n] = a[lo + k]
            if t.depths[frontier[0]] < t.depth_budget:
                self._add_children(t, frontier, logp[lo:hi])
            else:
                t.frontier = []
            lo = hi

    def _forward(self, hidden: torch.Tensor, inputs) -> torch.Tensor:
        emb = self.embed(inputs.input_ids).float()
        return self.head.forward_pool(hidden, emb, inputs.positions, self.rope, self.kv, inputs.meta,
                                      self.attn)

    # ---- commit ---------------------------------------------------------------------------
    def commit(self, req: Request, tree: DraftTree, result: AcceptResult) -> tuple[list[int], list[int]]:
        """Nothing moves: the next catch-up recomputes the accepted rows from true features."""
        return [], []


def _slots(block_table: list[int], lo: int, hi: int, block_size: int) -> torch.Tensor:
    """Pool slots of positions lo..hi-1."""
    table = torch.tensor(block_table[:(hi + block_size - 1) // block_size], dtype=torch.int64)
    return (table[:, None] * block_size + torch.arange(block_size)).flatten()[lo:hi]


def _select(t: _Tree) -> DraftTree:
    """The `max_nodes` best candidates (parents before children), renumbered."""
    order = sorted(range(1, len(t.tokens)), key=lambda n: (-t.scores[n], t.depths[n], n))
    chosen = {0}
    for n in order:
        if len(chosen) == t.max_nodes + 1:
            break
        if t.parents[n] in chosen:
            chosen.add(n)
    nodes = sorted(chosen)
    new = {n: k for k, n in enumerate(nodes)}
    return DraftTree([t.tokens[n] for n in nodes], [NO_NODE] + [new[t.parents[n]] for n in nodes[1:]])
