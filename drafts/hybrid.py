"""Hybrid proposer: an n-gram chain where the context offers a long match, the EAGLE tree otherwise.

Chosen per request and step: when the last `ngram_min`+ tokens occurred before (prompt or
output) and what followed is at least `min_draft` tokens long, copying it is cheaper and
usually better than the head (quoted code, repeated JSON keys, lists); otherwise the head's
dynamic tree drafts. The head sees every committed token's target features either way (the
engine hands them to `observe`), so switching back costs one catch-up forward.
"""
from __future__ import annotations

from drafts.eagle import EagleProposer
from drafts.ngram import NgramProposer
from specdec.draft_tree import DraftTree
from specdec.request import Request
from specdec.verifier import AcceptResult


class HybridProposer:
    budget_counts_nodes = True            # as EAGLE's; an n-gram chain of N tokens is N nodes

    def __init__(self, eagle: EagleProposer, ngram_max: int = 4, ngram_min: int = 3, min_draft: int = 2):
        self.eagle = eagle
        self.capture_layers = eagle.capture_layers
        self.min_draft = min_draft
        self.ngram = NgramProposer(eagle.depth * eagle.topk, ngram_max, ngram_min, 1)
        self.num_ngram = self.num_eagle = 0        # trees drafted by each side (for the benchmarks)

    @property
    def one_off_seconds(self) -> float:
        return self.eagle.one_off_seconds

    @one_off_seconds.setter
    def one_off_seconds(self, value: float) -> None:
        self.eagle.one_off_seconds = value

    def max_lookahead(self, req: Request) -> int:
        return self.eagle.max_lookahead(req)

    def reset(self, req: Request) -> None:
        self.eagle.reset(req)

    def observe(self, req: Request, start: int, features) -> None:
        self.eagle.observe(req, start, features)

    def propose(self, reqs: list[Request], max_nodes: list[int]) -> list[DraftTree]:
        trees: list[DraftTree | None] = []
        for r, budget in zip(reqs, max_nodes):
            t = self.ngram.propose([r], [budget])[0]
            trees.append(t if t.num_draft_tokens >= min(self.min_draft, budget) else None)
        rest = [i for i, t in enumerate(trees) if t is None]
        self.num_ngram += len(reqs) - len(rest)
        self.num_eagle += len(rest)
        if rest:
            for i, t in zip(rest, self.eagle.propose([reqs[i] for i in rest], [max_nodes[i] for i in rest])):
                trees[i] = t
        return trees

    def commit(self, req: Request, tree: DraftTree, result: AcceptResult) -> tuple[list[int], list[int]]:
        return [], []
