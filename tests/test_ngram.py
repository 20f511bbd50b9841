"""The n-gram proposer's matching: longest suffix first, most recent occurrence first, and
matches that overlap the end copied with their own period."""
from drafts.ngram import NgramProposer, find_continuations


def test_longest_suffix_wins_and_most_recent_occurrence_first():
    #          0  1  2  3  4  5  6  7  8
    tokens = [1, 2, 3, 4, 9, 2, 3, 5, 3]
    # suffix [3] occurs at 2 and 6: the most recent (6) is followed by 5, 3
    assert find_continuations(tokens, 2, 1, 1, 1) == [[5, 3]]
    # with two paths both continuations come, most recent first
    assert find_continuations(tokens, 2, 1, 1, 2) == [[5, 3], [4, 9]]
    # appending [2, 3]: the 2-token suffix matches at 5 (most recent) before 1
    assert find_continuations(tokens + [2, 3], 3, 2, 1, 1) == [[5, 3, 2]]


def test_a_run_of_one_token_drafts_k_tokens_not_one():
    tokens = [7, 8, 1, 1, 1, 1]
    # the most recent match of [1, 1, 1] starts one token before the end: copying past the
    # end repeats the run instead of stopping after one token
    assert find_continuations(tokens, 5, 3, 1, 1) == [[1, 1, 1, 1, 1]]


def test_a_repeated_phrase_continues_with_its_period():
    tokens = [4, 1, 2, 3, 1, 2, 3, 1, 2]
    assert find_continuations(tokens, 7, 2, 1, 1) == [[3, 1, 2, 3, 1, 2, 3]]


def test_no_match_means_no_draft_and_the_budget_trims_the_chain():
    assert find_continuations([1, 2, 3, 4], 4, 3, 1, 1) == []
    p = NgramProposer(num_speculative_tokens=6, max_n=3, min_n=1)
    tree = p._propose_one([7, 1, 1, 1, 1], budget=3)
    assert tree.token_ids == [1, 1, 1, 1]          # the root and three drafted tokens
    assert p._propose_one([1, 2, 3, 4], budget=3).num_draft_tokens == 0
