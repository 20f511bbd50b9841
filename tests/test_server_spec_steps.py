"""SpecStep (what `spec_trace` shows) from hand-drawn trees and accept results."""
from specdec.draft_tree import DraftTree
from specdec.output_processor import spec_step
from specdec.verifier import AcceptResult, verify_greedy


def test_chain_partly_accepted():
    tree = DraftTree.chain(10, [11, 12, 13])
    result = AcceptResult(accepted_nodes=[1], token_ids=[11, 99], source_nodes=[0, 1])
    s = spec_step(tree, result)
    assert (s.draft_token_ids, s.num_accepted, s.bonus_token_id) == ([11, 12, 13], 1, 99)


def test_tree_follows_the_accepted_branch_then_its_first_child():
    #        0(10)
    #       /     \\
    #   1(20)     2(30)
    #   |          |   \\
    #   3(21)    4(31)  5(32)
    #              |
    #            6(33)
    tree = DraftTree([10, 20, 30, 21, 31, 32, 33], [-1, 0, 0, 1, 2, 2, 4])
    # target argmax per node: root -> 30 (take branch 2), node 2 -> 32 (take node 5), node 5 -> 77 (bonus)
    argmax = [30, 0, 32, 0, 0, 77, 0]
    result = verify_greedy(tree, argmax)
    s = spec_step(tree, result)
    assert (s.draft_token_ids, s.num_accepted, s.bonus_token_id) == ([30, 32], 2, 77)
    # nothing accepted: the draft's main path (first children) is what was rejected
    s = spec_step(tree, verify_greedy(tree, [5, 0, 0, 0, 0, 0, 0]))
    assert (s.draft_token_ids, s.num_accepted, s.bonus_token_id) == ([20, 21], 0, 5)
    # accepted into a node with children but the target disagrees below it
    s = spec_step(tree, verify_greedy(tree, [30, 0, 8, 0, 0, 0, 0]))
    assert (s.draft_token_ids, s.num_accepted, s.bonus_token_id) == ([30, 31, 33], 1, 8)


def test_plain_decoding_has_no_drafts():
    s = spec_step(DraftTree.root_only(5), AcceptResult([], [42], [0]))
    assert (s.draft_token_ids, s.num_accepted, s.bonus_token_id) == ([], 0, 42)
