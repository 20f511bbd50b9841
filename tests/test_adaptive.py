"""Cost-aware speculation: draft only as deep as pays for its verification; probe after pausing."""
import pytest

from specdec.spec_policy import SpeculationPolicy, StepCost, expected_accepted
from specdec.speculative import SpecMetrics


def _linear_cost(c0, c1):
    cost = StepCost()
    for m in (1, 2, 5, 9, 17, 33):
        cost.observe(m, c0 + c1 * m)
    return cost


def test_step_cost_recovers_a_line_and_follows_change():
    cost = _linear_cost(0.010, 0.002)
    assert cost.predict(1) == pytest.approx(0.012)
    assert cost.predict(11) == pytest.approx(0.032)
    for _ in range(200):                         # the machine gets busy: everything 3x slower
        for m in (1, 5):
            cost.observe(m, 3 * (0.010 + 0.002 * m))
    assert cost.predict(1) == pytest.approx(0.036, rel=0.05)


def test_depth_grows_with_acceptance_and_is_zero_when_drafts_cannot_pay():
    policy = SpeculationPolicy(max_depth=4, cost=_linear_cost(0.010, 0.002))
    assert policy.depth(0.95, 1) == 4            # almost always accepted: draft deep
    assert policy.depth(0.02, 1) == 0            # almost never accepted: plain decoding
    shallow, deep = policy.depth(0.4, 1), policy.depth(0.8, 1)
    assert 0 < shallow <= deep


def test_expensive_verification_needs_higher_acceptance():
    cheap = SpeculationPolicy(max_depth=4, cost=_linear_cost(0.010, 0.0005))
    dear = SpeculationPolicy(max_depth=4, cost=_linear_cost(0.010, 0.010))
    assert cheap.depth(0.5, 1) > 0 and dear.depth(0.5, 1) == 0
    # a big batch makes each extra token as costly as a whole one-token step
    assert cheap.depth(0.5, 64) < cheap.depth(0.5, 1)


def test_acceptance_estimate_uses_per_position_evidence():
    p = SpeculationPolicy(max_depth=4, prior_acceptance=0.5, alpha=0.3)
    assert p.update(0.5, 4, 4) == 1.0            # 4 of 4 positions tried survived: full weight
    assert p.update(0.9, 4, 1) == pytest.approx(0.4 * 0.9 + 0.6 * 0.5)   # 1 survived, 1 failed
    assert p.update(0.9, 4, 0) < 0.9
    # no history: the prior is blended in, so one failed step does not stop drafting for good
    assert p.update(None, 4, 0) == pytest.approx(0.7 * 0.5)
    assert expected_accepted(0.5, 3) == pytest.approx(0.875)


def _lookahead_alone(eng, req):
    """The request's lookahead in a step of its own (a fresh step plan)."""
    eng._plan = None
    return eng._lookahead(req)


def test_engine_lookahead_pauses_then_probes_and_honours_per_request_cap(tiny_llm):
    from specdec import LLM, SamplingParams
    from specdec.request import Request
    llm = LLM(model=tiny_llm.engine.config.model, dtype="float32", num_kv_blocks=32,
              speculative_config={"method": "ngram", "num_speculative_tokens": 4, "tree_width": 2})
    eng = llm.engine
    eng.policy.cost = _linear_cost(0.010, 0.0005)
    req = Request("x", [5, 6, 7], SamplingParams(), eng.eos_token_ids)
    req.accept_ema = 0.99
    assert _lookahead_alone(eng, req) == 8              # depth 4 x width 2
    req.accept_ema = 0.0                         # drafts never accepted: pause, then probe depth 1
    steps = [_lookahead_alone(eng, req) for _ in range(eng.policy.probe_every)]
    assert steps[:-1] == [0] * (eng.policy.probe_every - 1) and steps[-1] == 2
    req.accept_ema = 0.99
    req.params = SamplingParams(num_speculative_tokens=1)
    assert _lookahead_alone(eng, req) == 2
    req.params = SamplingParams(num_speculative_tokens=0)
    assert _lookahead_alone(eng, req) == 0


def test_get_metrics_in_vllm_shape(tiny_llm):
    from specdec import LLM, SamplingParams
    llm = LLM(model=tiny_llm.engine.config.model, dtype="float32", num_kv_blocks=64,
              speculative_config={"method": "ngram", "num_speculative_tokens": 3, "adaptive": False})
    llm.generate(prompt_token_ids=[[5, 6, 7, 5, 6, 7, 5, 6]], sampling_params=SamplingParams(
        temperature=0.0, max_tokens=24, ignore_eos=True))
    m = {x.name: x for x in llm.get_metrics()}
    drafts = m["specdec:spec_decode_num_drafts"].value
    accepted = m["specdec:spec_decode_num_accepted_tokens"].value
    assert drafts == llm.engine.spec_metrics.num_forwards > 0
    assert m["specdec:spec_decode_num_draft_tokens"].value == llm.engine.spec_metrics.num_drafted
    assert sum(m["specdec:spec_decode_num_accepted_tokens_per_pos"].values) == accepted
    assert 1 + accepted / drafts == pytest.approx(llm.engine.spec_metrics.tau)


def test_metrics_arithmetic():
    m = SpecMetrics()
    m.record([0, 1, 2, 3], 2)                 # chain of 3: 2 accepted + bonus
    m.record([0, 1, 1], 0)                    # tree of 2 at depth 1: none accepted
    assert (m.num_drafted, m.num_accepted, m.num_emitted, m.num_forwards) == (5, 2, 4, 2)
    assert m.tau == 2.0 and m.acceptance_rate == pytest.approx(0.4)
    assert m.drafted_per_depth == [2, 1, 1] and m.accepted_per_depth == [1, 1, 0]


def test_step_cost_learns_a_step_function_the_line_cannot():
    """int4 kernels work in blocks of 4 rows: 4 tokens cost 1.6x one, 5 tokens 2.5x (measured)."""
    measured = {1: 4.75, 2: 5.4, 3: 6.4, 4: 7.4, 5: 11.7}
    cost = StepCost()
    for _ in range(3):
        for m, ms in measured.items():
            cost.observe(m, ms / 1000)
    for m, ms in measured.items():
        assert cost.predict(m) == pytest.approx(ms / 1000, rel=0.1)
    policy = SpeculationPolicy(max_depth=4, cost=cost)
    assert policy.depth(0.8, 1) == 3             # depth 4 would pay for a second row block


def test_failed_probes_back_off(tiny_llm):
    from specdec import LLM, SamplingParams
    from specdec.request import Request
    llm = LLM(model=tiny_llm.engine.config.model, dtype="float32", num_kv_blocks=32,
              speculative_config={"method": "ngram", "num_speculative_tokens": 2})
    eng = llm.engine
    eng.policy.cost = _linear_cost(0.010, 0.001)   # a probe is cheap, drafting at a=0 never pays
    req = Request("x", [5, 6, 7], SamplingParams(), eng.eos_token_ids)
    req.accept_ema = 0.0

    def steps_to_probe():
        n = 1
        while _lookahead_alone(eng, req) == 0 and n < 1000:   # bounded: a bug fails, never hangs
            n += 1
        return n

    every = eng.policy.probe_every
    waits = []
    for _ in range(5):                           # every probe fails
        waits.append(steps_to_probe())
        eng._after_verify(req, 1, 0)
    assert waits == [every, 2 * every, 4 * every, 8 * every, 8 * every]
    steps_to_probe()
    eng._after_verify(req, 1, 1)                 # a probe succeeds: back to the short wait
    req.accept_ema = 0.0
    assert steps_to_probe() == every


def test_probe_skipped_where_one_more_token_opens_a_new_row_block():
    cost = StepCost()
    for _ in range(2):
        for m, ms in {1: 4.75, 2: 5.4, 4: 7.4, 5: 11.7}.items():
            cost.observe(m, ms / 1000)
    policy = SpeculationPolicy(max_depth=4, cost=cost)
    assert policy.probe_is_cheap(1)              # 2 tokens cost 1.14x one
    assert not policy.probe_is_cheap(4)          # 5 tokens cost 1.6x four
    line = _linear_cost(0.010, 0.0008)           # 17 tokens cost 3.5% more than 16 (allowed: 3.1%):
    assert not line.predict(17) <= 1.0 * line.predict(16)
    assert not SpeculationPolicy(max_depth=4, cost=line).probe_is_cheap(16)   # too dear at batch 16
    assert SpeculationPolicy(max_depth=4, cost=line).probe_is_cheap(1)


def test_one_request_does_not_draft_at_everybody_elses_expense():
    """In a batch of 4 (measured: 4 tokens 8.4 ms, 5 tokens 12.3 ms at 2 threads) one request
    with high acceptance must not open a new int4 row block for itself; alone, it drafts."""
    cost = StepCost()
    for _ in range(2):
        for m, ms in {1: 3.9, 2: 4.5, 3: 5.5, 4: 8.4, 5: 12.3, 8: 15.3}.items():
            cost.observe(m, ms / 1000)
    policy = SpeculationPolicy(max_depth=4, cost=cost)
    assert policy.depth(0.9, 1) > 0
    assert policy.depth(0.9, 4) == 0
    # once the step has opened the second row block anyway, filling it is nearly free
    assert policy.depth(0.9, 5, 4.7) > 0
