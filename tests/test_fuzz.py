"""Property-based fuzz of SamplingParams, LLM.generate and LLM.chat on the bundled model.

Every case raises ValueError / TypeError naming the field, or returns finished outputs;
after every case the engine is idle, a fixed probe returns the tokens it returned on the
fresh engine, and the per-step invariant check never fires (evals/fuzz.py holds the
strategies and the property; `python -m evals.fuzz --cases 20000` is the long run).
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings

from evals.fuzz import FUZZ_SETTINGS, Fuzzer, cases, conversation, sampling_kwargs
from specdec import SamplingParams


@pytest.fixture(scope="module")
def fuzzer():
    return Fuzzer()


@settings(max_examples=300, **FUZZ_SETTINGS)
@given(kwargs=sampling_kwargs())
def test_sampling_params_reject_or_hold_usable_values(kwargs):
    from evals.fuzz import _check_message, _check_params
    try:
        params = SamplingParams(**kwargs)
    except (ValueError, TypeError) as e:
        _check_message(e)
        return
    _check_params(params)


def test_generate_and_chat_cases_fail_alone(fuzzer):
    @settings(max_examples=250, **FUZZ_SETTINGS)
    @given(case=cases())
    def run(case):
        fuzzer.run(case)
    run()
    assert sum(n for k, n in fuzzer.outcomes.items() if k.startswith("ran:")) > 0, fuzzer.outcomes


def test_chat_conversations(fuzzer):
    @settings(max_examples=80, **FUZZ_SETTINGS)
    @given(messages=conversation(), kwargs=sampling_kwargs())
    def run(messages, kwargs):
        fuzzer.run(("chat", messages, kwargs))
    run()
    assert fuzzer.outcomes["ran:chat"] > 0, fuzzer.outcomes
