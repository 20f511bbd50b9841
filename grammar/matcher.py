"""RequestGrammar: one request's grammar state over its output and over each step's draft tree.

The matcher's state is always "after the request's committed output tokens".
Per step, without moving that state for good (every accept is rolled back):
  * `constrain_draft` prunes draft nodes the grammar rejects and appends the
    tokens the grammar forces (jump-forward) as extra draft nodes;
  * `tree_bitmask` gives the allowed-token bitmask at every tree node, from the
    state after that node's path (xgrammar's draft-tree traversal).
After verification `advance` accepts the emitted tokens (accepted + bonus).
"""
from __future__ import annotations

import torch
import xgrammar as xgr

from specdec.draft_tree import NO_NODE, DraftTree


class RequestGrammar:
    """Grammar state of one request.

    Parameters
    ----------
    compiled : xgrammar.CompiledGrammar
    vocab_size : int
        The model's vocabulary size V (bitmask rows are ceil(V/32) int32 words).
    stop_token_ids : list[int]
        Tokens that end the text once the grammar is complete (EOS, stop tokens).
    """

    def __init__(self, compiled: xgr.CompiledGrammar, vocab_size: int, stop_token_ids: list[int]):
        self.matcher = xgr.GrammarMatcher(compiled, override_stop_tokens=list(stop_token_ids))
        self.vocab_size = vocab_size
        self.num_accepted = 0            # output tokens the matcher has accepted

    @property
    def is_terminated(self) -> bool:
        return self.matcher.is_terminated()

    # ---- per step -------------------------------------------------------------------
    def tree_bitmask(self, tree: DraftTree) -> torch.Tensor:
        """Allowed next tokens at every node of `tree`.

        Row i is the mask after accepting the tokens of nodes 1..i on the path to i
        (the root's token is already accepted: it is the last output token). Rows of
        nodes whose own token the grammar rejects are all zero; such nodes can never be
        accepted, because their parent's row forbids their token. Matcher state is
        unchanged on return.

        Returns
        -------
        torch.Tensor
            [num_nodes, ceil(V/32)] int32, bit j % 32 of word j // 32 set = token j allowed.
        """
        bitmask = xgr.allocate_token_bitmask(tree.num_nodes, self.vocab_size)
        ok = self.matcher.traverse_draft_tree(
            torch.tensor(tree.first_child(), dtype=torch.int64),
            torch.tensor(tree.next_sibling(), dtype=torch.int64),
            torch.tensor(tree.token_ids, dtype=torch.int64), bitmask)
        assert ok, "draft-tree traversal has no time limit, so it always completes"
        return bitmask

    def constrain_draft(self, tree: DraftTree, max_draft_tokens: int,
                        can_renumber: bool = True) -> tuple[DraftTree, int, int]:
        """Grammar-aware drafting: drop nodes the grammar rejects, then append forced tokens.

        A node whose token the grammar rejects (and its whole subtree) is removed:
        verifying it would spend a slot on a token that can never be accepted.
        Then, at the end of the deepest remaining path, the tokens the grammar
        forces there (its only legal continuation, e.g. `", "age": ` inside a JSON
        object) are appended as a chain while `max_draft_tokens` allows. They are
        drafts like any other: the target still verifies them, so output is unchanged.
        `can_renumber=False` (the proposer keeps K/V at node slots, e.g. a draft
        model) leaves the tree alone when pruning would shift node ids. Matcher
        state is unchanged on return.

        Returns
        -------
        (tree, num_pruned, num_forced)
            The new tree (the input when nothing changed), draft nodes removed, forced nodes added.
        """
        tokens, parents = [tree.token_ids[0]], [NO_NODE]
        kept_of: dict[int, int] = {0: 0}         # old node -> new node
        num_pruned = 0
        stack = [(c, 1) for c in reversed(tree.children(0))]  # (node, depth); DFS in tree order
        path: list[int] = []                       # old nodes currently accepted by the matcher
        best_leaf, best_depth = 0, 0
        while stack:
            node, depth = stack.pop()
            while len(path) >= depth:              # climb back to this node's parent
                self.matcher.rollback(1)
                path.pop()
            if len(tokens) - 1 >= max_draft_tokens or not self.matcher.accept_token(tree.token_ids[node]):
                num_pruned += _subtree_size(tree, node)
                continue
            path.append(node)
            kept_of[node] = len(tokens)
            tokens.append(tree.token_ids[node])
            parents.append(kept_of[tree.parents[node]])
            if depth > best_depth:
                best_leaf, best_depth = kept_of[node], depth
            stack.extend((c, depth + 1) for c in reversed(tree.children(node)))
        if path:
            self.matcher.rollback(len(path))
        if num_pruned and not can_renumber:
            return tree, 0, 0                     # keep node ids (draft K/V live at their slots)
        forced = self._forced_after(tokens, parents, best_leaf, max_draft_tokens - (len(tokens) - 1))
        if not forced and num_pruned == 0:
            return tree, 0, 0
        forced_parents = []
        prev = best_leaf
        for t in forced:
            forced_parents.append(prev)
            parents.append(prev)
            tokens.append(t)
            prev = len(tokens) - 1
        probs = None
        if tree.draft_probs is not None:
            probs = _remap_probs(tree, kept_of, tokens, forced_parents)
        return DraftTree(tokens, parents, probs), num_pruned, len(forced)

    def _forced_after(self, tokens: list[int], parents: list[int], leaf: int, room: int) -> list[int]:
        """Tokens the grammar forces after the path to `leaf` (at most `room`)."""
        if room <= 0:
            return []
        path = []
        node = leaf
        while node > 0:
            path.append(tokens[node])
            node = parents[node]
        path.reverse()
        for t in path:
            ok = self.matcher.accept_token(t)
            assert ok, "kept draft nodes were accepted a moment ago"
        forced = [] if self.matcher.is_terminated() else self.matcher.find_jump_forward_tokens()[:room]
        if path:
            self.matcher.rollback(len(path))
        return forced

    def draft_bitmask(self, path_token_ids: list[int]) -> torch.Tensor:
        """Allowed tokens after the request's output plus `path_token_ids` (a draft path, root
        excluded), for proposers that mask their own logits. Matcher state unchanged.

        Returns
        -------
        torch.Tensor
            [1, ceil(V/32)] int32; all zero if the path itself is rejected.
        """
        bitmask = xgr.allocate_token_bitmask(1, self.vocab_size)
        n = 0
        for t in path_token_ids:
            if not self.matcher.accept_token(t):
                bitmask.zero_()
                break
            n += 1
        else:
            if self.matcher.is_terminated():
                bitmask.zero_()
            else:
                self.matcher.fill_next_token_bitmask(bitmask)
        if n:
            self.matcher.rollback(n)
        return bitmask

    # ---- after verification -------------------------------------------------------------
    def advance(self, token_ids: list[int]) -> int:
        """Accept emitted tokens in order (mutates the matcher).

        Returns how many were accepted: all of them, or fewer when the grammar
        terminates (a stop token ends it) or rejects one. The caller drops the rest.
        """
        for i, t in enumerate(token_ids):
            if not self.matcher.accept_token(t):
                return i
            self.num_accepted += 1
            if self.matcher.is_terminated():
                return i + 1
        return len(token_ids)


def _subtree_size(tree: DraftTree, node: int) -> int:
    size, stack = 0, [node]
    while stack:
        n = stack.pop()
        size += 1
        stack.extend(tree.children(n))
    return size


def _remap_probs(tree: DraftTree, kept_of: dict[int, int], tokens: list[int],
                 forced_parents: list[int]) -> torch.Tensor:
    """draft_probs rows for the new tree: surviving nodes keep theirs; a node whose child is a
    forced token gets a point mass on it, so the verifier accepts it with probability r(x)."""
    old = tree.draft_probs
    probs = torch.zeros(len(tokens), old.shape[1], dtype=old.dtype)
    for o, n in kept_of.items():
        probs[n] = old[o]
    first_forced = len(tokens) - len(forced_parents)
    for k, parent in enumerate(forced_parents):
        probs[parent] = 0.0
        probs[parent, tokens[first_forced + k]] = 1.0
    return probs
