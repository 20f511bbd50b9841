"""RequestGrammar on hand-drawn draft trees over a 16-token vocabulary (xgrammar-style tests).

Token ids spell pieces of `{"a": 12}` plus free-text words and the reasoning markers,
split (`</` + `think>`) and whole (`</think>`). The model vocabulary (V = 40) is wider
than the tokenizer's, as real models pad it: ids 16..39 must always be masked.
"""
from __future__ import annotations

import json

import pytest
import torch
import xgrammar as xgr

from grammar.compiler import build_grammar
from grammar.matcher import RequestGrammar
from grammar.spec import GrammarSpec
from specdec.attention import unpack_tree_mask
from specdec.draft_tree import DraftTree
from specdec.sampler import apply_token_bitmask
from specdec.verifier import verify_greedy

VOCAB = ["<eos>", "{", "}", '"a"', ": ", "1", "2", "</", "think>", "hmm", " ok", "x", "</think>",
         '{"a": ', "<think>", " "]
V = 40
EOS, LB, RB, KEY, COLON, ONE, TWO, END_A, END_B, HMM, OK, X, END, OPEN_KEY, THINK, SPACE = range(16)
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.fixture(scope="module")
def compiler():
    info = xgr.TokenizerInfo(VOCAB, vocab_type=xgr.VocabType.RAW, vocab_size=V, stop_token_ids=[EOS])
    return xgr.GrammarCompiler(info, max_threads=1)


def grammar(compiler, reasoning: str | None = None) -> RequestGrammar:
    spec = GrammarSpec("json_schema", json.dumps(SCHEMA), reasoning)
    return RequestGrammar(compiler.compile_grammar(build_grammar(spec)), V, [EOS])


def allowed(bitmask_row: torch.Tensor) -> set[int]:
    return set(unpack_tree_mask(bitmask_row[None], V)[0].nonzero().flatten().tolist())


def allowed_after(g: RequestGrammar, tokens: list[int]) -> set[int]:
    """Reference: accept the tokens one by one on a fresh fork, then read the mask."""
    m = g.matcher.fork()
    for t in tokens:
        assert m.accept_token(t)
    b = xgr.allocate_token_bitmask(1, V)
    m.fill_next_token_bitmask(b)
    return allowed(b[0])


def test_tree_bitmask_is_the_mask_after_each_nodes_path(compiler):
    g = grammar(compiler)
    # root(=last prompt token) -> "{" -> '"a"' -> ": " -> "1"
    #                          \-> '{"a": ' -> "2" -> "}"
    #                          \-> "x" (rejected by the grammar)
    tree = DraftTree([HMM, LB, KEY, COLON, ONE, OPEN_KEY, TWO, RB, X], [-1, 0, 1, 2, 3, 0, 5, 6, 0])
    masks = g.tree_bitmask(tree)
    assert masks.shape == (9, (V + 31) // 32) and masks.dtype == torch.int32
    for node in range(tree.num_nodes):
        path = [tree.token_ids[n] for n in tree.path_to(node)[1:]]
        if node == 8:
            assert allowed(masks[node]) == set(), "a rejected node's row is empty"
            continue
        assert allowed(masks[node]) == allowed_after(g, path), f"node {node} path {path}"
    assert allowed(masks[0]) == {LB, OPEN_KEY}
    assert allowed(masks[7]) == {EOS}                     # the object is complete: only EOS
    assert not allowed(masks[0]) & set(range(16, V)), "padding ids beyond the tokenizer stay masked"
    assert allowed_after(g, []) == {LB, OPEN_KEY}, "matcher state unchanged by the traversal"


def test_masked_verification_picks_only_grammar_tokens(compiler):
    g = grammar(compiler)
    tree = DraftTree.chain(HMM, [OPEN_KEY, ONE, X])
    logits = torch.zeros(tree.num_nodes, V)
    logits[:, X] = 10.0                                   # the "model" loves x everywhere
    logits[:, ONE] = 5.0
    logits[:, RB] = 4.0
    logits[:, OPEN_KEY] = 3.0
    logits[2, ONE] = 0.0                                  # after "1" the model prefers to close
    masked = apply_token_bitmask(logits, g.tree_bitmask(tree))
    result = verify_greedy(tree, masked.argmax(-1).tolist())
    assert result.token_ids == [OPEN_KEY, ONE, RB]        # x rejected at node 2, bonus "}"
    assert g.advance(result.token_ids) == 3
    assert g.advance([EOS]) == 1 and g.is_terminated


def test_constrain_draft_prunes_rejected_subtrees_and_appends_forced_tokens(compiler):
    g = grammar(compiler)
    # good chain "{" then a rejected "x" with a child; and a rejected first token "hmm"
    tree = DraftTree([SPACE, LB, X, ONE, HMM], [-1, 0, 1, 2, 0])
    new, pruned, forced = g.constrain_draft(tree, max_draft_tokens=6)
    assert pruned == 3                                    # x, its child, hmm
    # after "{" the grammar forces '"a"' then ": " (one token each in this vocabulary)
    assert new.token_ids == [SPACE, LB, KEY, COLON] and new.parents == [-1, 0, 1, 2]
    assert forced == 2
    assert allowed_after(g, []) == {LB, OPEN_KEY}         # state unchanged


def test_forced_tokens_fill_an_empty_draft_within_budget(compiler):
    g = grammar(compiler)
    new, pruned, forced = g.constrain_draft(DraftTree.root_only(SPACE), max_draft_tokens=4)
    assert (pruned, forced) == (0, 1) and new.token_ids == [SPACE, OPEN_KEY]
    new, _, forced = g.constrain_draft(DraftTree.root_only(SPACE), max_draft_tokens=0)
    assert forced == 0 and new.num_nodes == 1


def test_constrain_draft_keeps_node_ids_when_it_may_not_renumber(compiler):
    g = grammar(compiler)
    tree = DraftTree([SPACE, X, LB], [-1, 0, 0])          # pruning x would shift "{" from 2 to 1
    new, pruned, forced = g.constrain_draft(tree, 4, can_renumber=False)
    assert new is tree and pruned == 0 and forced == 0


def test_draft_bitmask_follows_a_path_and_rejects_bad_ones(compiler):
    g = grammar(compiler)
    assert allowed(g.draft_bitmask([OPEN_KEY])[0]) == {ONE, TWO}
    assert allowed(g.draft_bitmask([X])[0]) == set()
    assert allowed_after(g, []) == {LB, OPEN_KEY}


def test_sampled_draft_probs_survive_pruning_and_forced_parents_become_point_masses(compiler):
    g = grammar(compiler)
    probs = torch.full((3, V), 1.0 / V)
    tree = DraftTree([SPACE, LB, X], [-1, 0, 1], probs)
    new, pruned, forced = g.constrain_draft(tree, 4)
    assert pruned == 1 and new.token_ids[:2] == [SPACE, LB] and forced >= 1
    assert torch.equal(new.draft_probs[0], probs[0])
    first_forced_parent = new.parents[2]
    assert new.draft_probs[first_forced_parent, new.token_ids[2]] == 1.0
    assert new.draft_probs[first_forced_parent].sum() == 1.0


# ---- reasoning: the grammar starts exactly after </think> -------------------------------------

def run_chain_decode(g: RequestGrammar, preferred: list[int], drafts_per_step: list[list[int]]) -> list[int]:
    """Fake model: at output position i its argmax is preferred[i] (else x). Each step verifies
    the given draft chain under the grammar masks, as the engine does. Returns emitted tokens."""
    out: list[int] = []
    for draft in drafts_per_step:
        tree = DraftTree.chain(out[-1] if out else SPACE, draft)
        logits = torch.zeros(tree.num_nodes, V)
        for node in range(tree.num_nodes):
            pos = len(out) + tree.depths[node]
            logits[node, preferred[pos] if pos < len(preferred) else X] = 10.0
            logits[node, [LB, OPEN_KEY, ONE, RB, EOS]] += torch.tensor([3.0, 4.0, 2.0, 2.5, 0.5])
        result = verify_greedy(tree, apply_token_bitmask(logits, g.tree_bitmask(tree)).argmax(-1).tolist())
        n = g.advance(result.token_ids)
        out += result.token_ids[:n]
        if g.is_terminated:
            break
    return out


@pytest.mark.parametrize("marker", [[END], [END_A, END_B]], ids=["whole", "split"])
def test_think_end_inside_a_draft_window_then_json_with_no_stray_text(compiler, marker):
    g = grammar(compiler, reasoning="qwen3")
    # the model wants: "hmm ok" </think> " ok x" then junk; the draft window spans the marker
    preferred = [HMM, OK, *marker, OK, X, HMM, X, X, X]
    drafts = [[HMM, OK, *marker, OK, X], [X, X], [X], [X], [X], [X]]
    out = run_chain_decode(g, preferred, drafts)
    text = "".join(VOCAB[t] for t in out if t != EOS)
    reasoning, answer = text.split("</think>")
    assert reasoning == "hmm ok"                      # free text, no grammar inside the block
    assert answer.startswith("{"), f"stray text before the JSON: {answer!r}"
    assert json.loads(answer) == {"a": 1} and out[-1] == EOS
    # inside the block the grammar allowed x (free text); right after the marker only JSON starts
    assert allowed_after(grammar(compiler, "qwen3"), [HMM, *marker]) == {LB, OPEN_KEY}
    assert X in allowed_after(grammar(compiler, "qwen3"), [HMM])
