"""Hybrid proposer: an n-gram chain where the context offers a long match, the EAGLE tree otherwise.

Chosen per request and step: when the last `ngram_min`+ tokens occurred before (prompt or
output) and what followed is at least `min_draft` tokens long, copying it is cheaper and
usually better than the head (quoted code, repeated JSON keys, lists); otherwise the head's
dynamic tree drafts. A budget of at least twice the head's depth has room for both: the chain
(at most half the budget) and the head's tree over the other nodes are merged into one tree
(shared prefixes shared), so the target verifies both guesses in one forward. The head sees
every committed token's target features either way (the engine hands them to `observe`), so
switching back costs one catch-up forward.
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
        self.num_ngram = self.num_eagle = self.num_merged = 0   # trees of each kind (for the benchmarks)

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
        ngram_trees = self.ngram.propose(reqs, max_nodes)
        chains: list[list[int]] = []          # n-gram draft tokens kept per request ([] = none)
        head_budget: list[int] = []           # nodes left to the head (0 = it does not draft)
        for t, budget in zip(ngram_trees, max_nodes):
            chain = t.token_ids[1:] if t.num_draft_tokens >= min(self.min_draft, budget) else []
            both = budget >= 2 * self.eagle.depth
            if both:
                chain = chain[:budget // 2]
            chains.append(chain)
            head_budget.append(budget - len(chain) if both or not chain else 0)
        drafting = [i for i, n in enumerate(head_budget) if n > 0]
        heads = dict(zip(drafting, self.eagle.propose([reqs[i] for i in drafting],
                                                      [head_budget[i] for i in drafting]))) if drafting else {}
        trees = []
        for i, (t, chain) in enumerate(zip(ngram_trees, chains)):
            if i not in heads:
                self.num_ngram += 1
                trees.append(t)               # the n-gram chain alone (untrimmed: budget < 2 x depth)
            elif chain:
                self.num_merged += 1
                trees.append(heads[i].with_path(chain))
            else:
                self.num_eagle += 1
                trees.append(heads[i])
        return trees

    def commit(self, req: Request, tree: DraftTree, result: AcceptResult) -> tuple[list[int], list[int]]:
        return [], []
