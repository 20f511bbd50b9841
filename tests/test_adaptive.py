"""Adaptive speculation: depth follows recent acceptance; failing drafts pause drafting."""
from specdec.speculative import AdaptiveDepth, SpecMetrics

import pytest


def test_depth_follows_acceptance_and_is_at_least_one():
    a = AdaptiveDepth(max_depth=4)
    assert a.depth(None) == 4                 # no history: full depth
    ema = None
    for _ in range(6):
        ema = a.update(ema, 4)
    assert a.depth(ema) == 4
    for _ in range(6):
        ema = a.update(ema, 0)
    assert a.depth(ema) == 1


def test_failing_drafts_pause_drafting_then_probe_again():
    a = AdaptiveDepth(max_depth=4, min_gain=0.4, cooldown=6)
    ema = a.update(None, 0)
    assert a.skip_steps(ema) == 6             # nothing accepted: decode plainly for a while
    ema = a.update(ema, 3)
    assert a.skip_steps(ema) == 0             # a good probe resumes drafting


def test_engine_lookahead_honours_skip_and_per_request_cap(tiny_llm):
    from specdec import LLM, SamplingParams
    from specdec.request import Request
    llm = LLM(model=tiny_llm.engine.config.model, dtype="float32", num_kv_blocks=32,
              speculative_config={"method": "ngram", "num_speculative_tokens": 4, "tree_width": 2})
    eng = llm.engine
    req = Request("x", [5, 6, 7], SamplingParams(), eng.eos_token_ids)
    assert eng._lookahead(req) == 8           # depth 4 x width 2
    req.spec_skip_steps = 2
    assert [eng._lookahead(req) for _ in range(3)] == [0, 0, 8]
    req.params = SamplingParams(num_speculative_tokens=1)
    assert eng._lookahead(req) == 2
    req.params = SamplingParams(num_speculative_tokens=0)
    assert eng._lookahead(req) == 0


def test_metrics_arithmetic():
    m = SpecMetrics()
    m.record([0, 1, 2, 3], 2)                 # chain of 3: 2 accepted + bonus
    m.record([0, 1, 1], 0)                    # tree of 2 at depth 1: none accepted
    assert (m.num_drafted, m.num_accepted, m.num_emitted, m.num_forwards) == (5, 2, 4, 2)
    assert m.tau == 2.0 and m.acceptance_rate == pytest.approx(0.4)
    assert m.drafted_per_depth == [2, 1, 1] and m.accepted_per_depth == [1, 1, 0]
