"""Verifier: hand-drawn trees for greedy, bitmask plumbing, and a statistical proof that
speculative sampling is lossless (and that the proof notices a broken acceptance rule)."""
import itertools

import pytest
import torch
from scipy.stats import chisquare

import specdec.verifier as verifier
from specdec.attention import pack_tree_mask
from specdec.draft_tree import DraftTree
from specdec.sampler import RowContext, apply_token_bitmask, target_probs
from specdec.sampling_params import SamplingParams
from specdec.verifier import verify_greedy, verify_sampled

V = 6  # tiny vocabulary: exact distributions can be enumerated


# ---- greedy on hand-drawn trees ---------------------------------------------------
#        0(root)
#       /   \
#     1(a=3) 2(a=4)
#     |       |
#     3(5)    4(1)
TREE = DraftTree([9, 3, 4, 5, 1], [-1, 0, 0, 1, 2])


def test_greedy_follows_matching_branch_and_adds_bonus():
    # argmax at root = 4 (node 2), at node 2 = 1 (node 4), at node 4 = 2 (bonus)
    r = verify_greedy(TREE, [4, 0, 1, 0, 2])
    assert r.accepted_nodes == [2, 4] and r.token_ids == [4, 1, 2] and r.source_nodes == [0, 2, 4]


def test_greedy_rejects_everything_still_emits_bonus():
    r = verify_greedy(TREE, [0, 0, 0, 0, 0])
    assert r.accepted_nodes == [] and r.token_ids == [0]


def test_greedy_stops_at_first_mismatch_on_a_path():
    r = verify_greedy(TREE, [3, 2, 0, 0, 0])   # node 1 accepted, node 3 (=5) != 2
    assert r.accepted_nodes == [1] and r.token_ids == [3, 2]


def test_bitmask_forbids_the_argmax_at_a_node():
    logits = torch.zeros(2, 40)
    logits[:, 7] = 5.0        # argmax 7 everywhere
    logits[:, 33] = 4.0       # runner-up in the second word
    allowed = torch.ones(2, 40, dtype=torch.bool)
    allowed[1, 7] = False     # the grammar forbids 7 at node 1 only
    masked = apply_token_bitmask(logits, pack_tree_mask(allowed))
    assert masked.argmax(-1).tolist() == [7, 33]
    chain = DraftTree.chain(1, [7])
    r = verify_greedy(chain, masked.argmax(-1).tolist())
    assert r.token_ids == [7, 33]


# ---- sampling is lossless --------------------------------------------------------
torch.manual_seed(1234)
TARGET_TABLE = torch.randn(V, V) * 1.5      # logits of the next token given the last token
DRAFT_TABLE = torch.randn(V, V) * 1.5       # a different draft model

SETTINGS = {
    "temperature": SamplingParams(temperature=0.7),
    "top_k": SamplingParams(temperature=1.0, top_k=3),
    "top_p": SamplingParams(temperature=1.0, top_p=0.7),
    "min_p": SamplingParams(temperature=1.0, min_p=0.2),
    "penalty": SamplingParams(temperature=1.0, repetition_penalty=1.8, presence_penalty=0.5),
}
PROMPT = [2]


def _target(history: list[int], params: SamplingParams) -> torch.Tensor:
    out = history[len(PROMPT):]
    return target_probs(TARGET_TABLE[history[-1]].unsqueeze(0).clone(),
                        [RowContext(params, PROMPT, out, None)])[0]


def _exact_two_token_distribution(params: SamplingParams) -> torch.Tensor:
    exact = torch.zeros(V * V)
    p1 = _target(PROMPT, params)
    for a, b in itertools.product(range(V), range(V)):
        exact[a * V + b] = p1[a] * _target(PROMPT + [a], params)[b]
    return exact


def _draft_tree(history: list[int], shape: str, gen: torch.Generator) -> DraftTree:
    q = lambda tok: torch.softmax(DRAFT_TABLE[tok], -1)  # noqa: E731
    root = history[-1]
    if shape == "sampled_chain":               # children drawn from q: verified with min(1, p/q)
        t1 = int(torch.multinomial(q(root), 1, generator=gen))
        t2 = int(torch.multinomial(q(t1), 1, generator=gen))
        probs = torch.stack([q(root), q(t1), torch.zeros(V)])
        return DraftTree.chain(root, [t1, t2], probs)
    if shape == "sampled_tree":                # two i.i.d. children of the root, one grandchild each
        a, b = (int(x) for x in torch.multinomial(q(root), 2, replacement=True, generator=gen))
        ga = int(torch.multinomial(q(a), 1, generator=gen))
        gb = int(torch.multinomial(q(b), 1, generator=gen))
        probs = torch.stack([q(root), q(a), q(b), torch.zeros(V), torch.zeros(V)])
        return DraftTree([root, a, b, ga, gb], [-1, 0, 0, 1, 2], probs)
    # deterministic top-2 tree (point masses), like n-gram or top-k drafting
    a, b = q(root).topk(2).indices.tolist()
    return DraftTree([root, a, b, int(q(a).argmax()), int(q(b).argmax())], [-1, 0, 0, 1, 2])


def _sample_two_tokens(params: SamplingParams, shape: str, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    counts = torch.zeros(V * V)
    for _ in range(n):
        history = list(PROMPT)
        while len(history) < len(PROMPT) + 2:
            tree = _draft_tree(history, shape, gen)
            probs = torch.stack([_target(history + [tree.token_ids[m] for m in tree.path_to(i)[1:]], params)
                                 for i in range(tree.num_nodes)])
            history += verify_sampled(tree, probs, gen).token_ids
        counts[history[1] * V + history[2]] += 1
    return counts


def _p_value(counts: torch.Tensor, exact: torch.Tensor) -> float:
    support = exact > 0
    assert counts[~support].sum() == 0, "sampled a token the target gives zero probability"
    expected = exact[support] / exact[support].sum() * counts.sum()
    return float(chisquare(counts[support].numpy(), expected.numpy()).pvalue)


CASES = [("temperature", "sampled_chain"), ("top_k", "sampled_tree"), ("top_p", "deterministic"),
         ("min_p", "sampled_chain"), ("penalty", "sampled_tree"), ("penalty", "deterministic")]


@pytest.mark.parametrize("setting,shape", CASES)
def test_speculative_sampling_matches_target_distribution(setting, shape):
    params = SETTINGS[setting]
    counts = _sample_two_tokens(params, shape, n=3000, seed=hash((setting, shape)) % 2**31)
    p = _p_value(counts, _exact_two_token_distribution(params))
    assert p > 1e-4, f"{setting}/{shape}: chi-square p = {p:.2e}"


@pytest.mark.parametrize("shape", ["sampled_chain", "deterministic"])
def test_broken_acceptance_rule_is_detected(monkeypatch, shape):
    """Accepting every draft (u = 0 always) must make the same test fail."""
    monkeypatch.setattr(verifier, "_uniform", lambda gen: 0.0)
    params = SETTINGS["temperature"]
    counts = _sample_two_tokens(params, shape, n=3000, seed=7)
    assert _p_value(counts, _exact_two_token_distribution(params)) < 1e-4
