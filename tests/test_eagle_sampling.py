"""Lossless sampling with the shipped EAGLE head on the real bundled model, end to end.

At temperature 1 the head's trees are deterministic top-k proposals verified as point masses
(specdec/verifier.py); the engine's output must follow the target's own distribution. The
exact law of the first two sampled tokens comes from the plain engine's logprobs (the same
quantized target): the top 3 first tokens, for each of them the top 3 second tokens, and
"anything else" cells (outcomes under 1% folded in), compared by a chi-square test with the
counts of 600 seeded speculative requests. The same test with an acceptance rule that accepts every draft
must fail (so a pass means something)."""
import math

import pytest
import torch
from scipy.stats import chisquare

import specdec.verifier as verifier
from specdec import LLM, SamplingParams

PROMPT = "Count from 1 to 5."
TOP = 3
MIN_CELL = 0.01          # rarer outcomes fold into the "anything else" cells (chi-square needs counts)


@pytest.fixture(scope="module")
def eagle_llm():
    # a 2 x 2 tree every step, so every request's second token goes through tree verification
    return LLM(num_threads=2, speculative_config={"method": "eagle", "adaptive": False,
                                                  "num_speculative_tokens": 2, "tree_width": 2})


def _ids(llm):
    from drafts.train.collect import chat_ids
    return chat_ids(llm.tokenizer, PROMPT)


def _top(llm, ids) -> dict[int, float]:
    """The target's top-TOP next tokens and their probabilities at temperature 1."""
    out = llm.generate(prompt_token_ids=[ids], sampling_params=SamplingParams(temperature=0.0, max_tokens=1,
                                                                                logprobs=TOP))
    top = out[0].outputs[0].logprobs[0].top
    return {t: math.exp(lp) for t, lp in sorted(top.items(), key=lambda kv: -kv[1])[:TOP]}


def _exact_cells(llm_default, ids):
    """cell key -> probability: (a, b), (a, None) = a then anything else, (None,) = anything else first."""
    cells = {}
    first = {a: pa for a, pa in _top(llm_default, ids).items() if pa >= MIN_CELL}
    for a, pa in first.items():
        second = {b: pb for b, pb in _top(llm_default, ids + [a]).items() if pa * pb >= MIN_CELL}
        for b, pb in second.items():
            cells[(a, b)] = pa * pb
        cells[(a, None)] = pa * (1 - sum(second.values()))
    cells[(None,)] = 1 - sum(first.values())
    return cells


def _counts(llm, ids, cells, n: int, seed: int) -> list[int]:
    params = [SamplingParams(temperature=1.0, max_tokens=2, ignore_eos=True, seed=seed + i) for i in range(n)]
    outs = llm.generate(prompt_token_ids=[ids] * n, sampling_params=params)
    counts = dict.fromkeys(cells, 0)
    for o in outs:
        a, b = o.outputs[0].token_ids[:2]
        key = (a, b) if (a, b) in cells else (a, None) if (a, None) in cells else (None,)
        counts[key] += 1
    return [counts[k] for k in cells]


def _p_value(counts, cells) -> float:
    probs = torch.tensor(list(cells.values()), dtype=torch.float64).clamp(min=0)
    expected = (probs / probs.sum() * sum(counts)).numpy()
    return float(chisquare(counts, expected).pvalue)


def test_eagle_sampling_at_temperature_1_keeps_the_target_distribution(llm_default, eagle_llm):
    ids = _ids(llm_default)
    cells = _exact_cells(llm_default, ids)
    assert len(cells) >= 6 and max(cells.values()) < 0.9                 # a spread-out law
    m = eagle_llm.engine.spec_metrics
    drafted0, accepted0 = m.num_drafted, m.num_accepted
    counts = _counts(eagle_llm, ids, cells, n=600, seed=1000)
    assert m.num_drafted > drafted0 and m.num_accepted > accepted0      # trees were drafted and accepted
    p = _p_value(counts, cells)
    assert p > 1e-4, f"chi-square p = {p:.2e}, counts {counts}, expected {list(cells.values())}"


def test_the_distribution_test_notices_a_broken_acceptance_rule(llm_default, eagle_llm, monkeypatch):
    ids = _ids(llm_default)
    cells = _exact_cells(llm_default, ids)
    monkeypatch.setattr(verifier, "_uniform", lambda gen: 0.0)           # accept every draft
    counts = _counts(eagle_llm, ids, cells, n=300, seed=5000)
    assert _p_value(counts, cells) < 1e-4
