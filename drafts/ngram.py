"""N-gram / prompt-lookup proposer: drafts what followed earlier occurrences of the recent tokens.

Looks for the longest suffix of the sequence (max_n down to min_n tokens) that
occurred before in the prompt or output, most recent occurrence first. Each
distinct continuation becomes one path; several paths make a tree. A match that overlaps
the end of the sequence (inside a run of a repeated token or phrase) is copied the way an
overlapping LZ77 copy is: the repeat continues with its own period, so a run of "a a a a"
drafts k more tokens, not the one token left before the end. Proposals are deterministic,
so the verifier treats them as point masses. No model, no K/V.
"""
from __future__ import annotations

from specdec.draft_tree import DraftTree
from specdec.request import Request
from specdec.verifier import AcceptResult


class NgramProposer:
    def __init__(self, num_speculative_tokens: int = 4, max_n: int = 4, min_n: int = 1,
                 max_paths: int = 1, search_window: int = 2048):
        assert num_speculative_tokens >= 1 and 1 <= min_n <= max_n and max_paths >= 1
        self.k = num_speculative_tokens     # depth of each path
        self.max_n, self.min_n = max_n, min_n
        self.max_paths = max_paths          # 1 = chain; > 1 = tree of distinct continuations
        self.search_window = search_window  # only the most recent tokens are searched

    def max_lookahead(self, req: Request) -> int:
        return self.k * self.max_paths

    def propose(self, reqs: list[Request], max_nodes: list[int]) -> list[DraftTree]:
        return [self._propose_one(r.token_ids, budget) for r, budget in zip(reqs, max_nodes)]

    def _propose_one(self, tokens: list[int], budget: int) -> DraftTree:
        paths = find_continuations(tokens[-self.search_window:], self.k, self.max_n, self.min_n,
                                   self.max_paths)
        kept, used = [], 0
        for p in paths:          # trim to the reserved slots (shared prefixes counted generously)
            p = p[:max(0, budget - used)]
            if p:
                kept.append(p)
                used += len(p)
        return DraftTree.from_token_paths(tokens[-1], kept)

    def commit(self, req: Request, tree: DraftTree, result: AcceptResult) -> tuple[list[int], list[int]]:
        return [], []

    def reset(self, req: Request) -> None:
        pass


def find_continuations(tokens: list[int], k: int, max_n: int, min_n: int, max_paths: int) -> list[list[int]]:
    """Up to `max_paths` distinct k-token continuations of the longest matching suffix.

    For each n from max_n down to min_n, scan earlier occurrences of the last n
    tokens (most recent first); stop at the first n that yields any match.
    """
    L = len(tokens)
    for n in range(min(max_n, L - 1), min_n - 1, -1):
        suffix = tokens[L - n:]
        paths: list[list[int]] = []
        for start in range(L - n - 1, -1, -1):
            if tokens[start:start + n] == suffix:
                cont = _copy(tokens, start + n, k)
                if cont and cont not in paths and not any(p[:len(cont)] == cont for p in paths):
                    paths.append(cont)
                    if len(paths) >= max_paths:
                        break
        if paths:
            return paths
    return []


def _copy(tokens: list[int], src: int, k: int) -> list[int]:
    """k tokens copied from position src on, the copy reading its own output past the end
    (period L - src: the matched suffix recurs every L - src tokens)."""
    out = tokens[src:src + k]
    period = len(tokens) - src           # when out is short, it holds exactly `period` tokens
    while len(out) < k:
        out.append(out[len(out) - period])
    return out
