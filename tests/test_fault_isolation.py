"""A bad request fails alone: failures injected into one request of a batch, whole-step
failures, distributions with no finite mass, and aborts at any time (mid-step included).

Tiny random-weight Llama with n-gram speculation on, greedy, so "the tokens a request
produces alone" are exact. The invariant check runs after every step (tests/conftest.py).
"""
from __future__ import annotations

import random

import pytest
import torch

from specdec import LLM, SamplingParams
from specdec.detokenizer import IncrementalDetokenizer
from specdec.output_processor import OutputProcessor
from specdec.sampler import NoValidTokenError, check_finite_mass, probs_from_logits

NGRAM = {"method": "ngram", "num_speculative_tokens": 3, "adaptive": False}  # always draft
GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


@pytest.fixture(scope="module")
def spec_llm(tiny_model_dir):
    return LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=512, max_num_seqs=64,
               speculative_config=NGRAM, check_invariants=True)


def prompts(n: int) -> list[list[int]]:
    rng = random.Random(n)
    out = []
    for _ in range(n):
        p = [rng.randrange(3, 2000) for _ in range(rng.randint(4, 12))]
        out.append(p + p[:rng.randint(2, len(p))])          # repeats give n-gram drafts
    return out


def assert_idle(engine) -> None:
    assert engine.requests == {} and not engine.has_unfinished_requests()
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def alone(llm, ids_list, params=GREEDY) -> list[list[int]]:
    return [llm.generate(prompt_token_ids=[ids], sampling_params=params)[0].outputs[0].token_ids
            for ids in ids_list]


# ---- one request of a batch of 8 fails in a per-request stage ------------------------------------

def _inject(monkeypatch, stage: str, bad: SamplingParams):
    """Make `stage` raise for the request whose params object is `bad`."""
    import specdec.engine as engine_mod
    if stage == "sampling":
        real = engine_mod.RowContext

        def row_context(params, *args):
            if params is bad:
                raise RuntimeError("injected sampling failure")
            return real(params, *args)
        monkeypatch.setattr(engine_mod, "RowContext", row_context)
    elif stage == "drafting":
        from drafts.ngram import NgramProposer
        real = NgramProposer.propose

        def propose(self, reqs, max_nodes):
            if any(r.params is bad for r in reqs):
                raise RuntimeError("injected drafting failure")
            return real(self, reqs, max_nodes)
        monkeypatch.setattr(NgramProposer, "propose", propose)
    elif stage == "detokenizing":
        real = IncrementalDetokenizer.add_token
        bad_detoks = []

        def add_token(self, token_id):
            if any(self is d for d in bad_detoks):     # identity: detokenizers compare equal
                raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "injected detokenizer failure")
            return real(self, token_id)
        monkeypatch.setattr(IncrementalDetokenizer, "add_token", add_token)
        return bad_detoks
    elif stage == "stop handling":
        real = OutputProcessor._check_finish

        def check_finish(self, req, token_id):
            if req.params is bad and req.num_output_tokens >= 2:     # fails mid-way
                raise KeyError("injected stop-handling failure")
            return real(self, req, token_id)
        monkeypatch.setattr(OutputProcessor, "_check_finish", check_finish)


@pytest.mark.parametrize("stage", ["sampling", "drafting", "detokenizing", "stop handling"])
def test_a_failure_in_one_request_leaves_the_other_seven_exact(spec_llm, monkeypatch, stage):
    engine = spec_llm.engine
    batch = prompts(8)
    reference = alone(spec_llm, batch)
    drafted_before = engine.spec_metrics.num_drafted
    bad = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)   # same settings, own object
    bad_detoks = _inject(monkeypatch, stage, bad)
    params = [GREEDY] * 8
    params[3] = bad
    rids = [engine.add_request(None, ids, p) for ids, p in zip(batch, params)]
    if bad_detoks is not None:
        bad_detoks.append(engine.requests[rids[3]].detok)
    finals, seen = {}, []
    for _ in range(100):
        if not engine.has_unfinished_requests():
            break
        for out in engine.step():
            seen.append(out.request_id) if out.finished else None
            finals[out.request_id] = out
    assert_idle(engine)
    assert sorted(seen) == sorted(rids), "every request ends with exactly one finished output"
    failed = finals[rids[3]].outputs[0]
    assert failed.finish_reason == "error" and "injected" in failed.error
    assert [finals[r].outputs[0].token_ids for i, r in enumerate(rids) if i != 3] == \
        [ref for i, ref in enumerate(reference) if i != 3]
    assert all(finals[r].outputs[0].finish_reason == "length" for i, r in enumerate(rids) if i != 3)
    assert engine.spec_metrics.num_drafted > drafted_before       # speculation was on throughout


def test_generate_returns_the_failed_request_with_its_error(spec_llm, monkeypatch):
    bad = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    _inject(monkeypatch, "sampling", bad)
    batch = prompts(3)
    outs = spec_llm.generate(prompt_token_ids=batch, sampling_params=[GREEDY, bad, GREEDY])
    assert [o.outputs[0].finish_reason for o in outs] == ["length", "error", "length"]
    assert outs[1].outputs[0].error.startswith("sampling failed: RuntimeError: injected")
    assert_idle(spec_llm.engine)


# ---- the whole step fails --------------------------------------------------------------------------

def test_a_failed_step_reports_to_every_request_and_the_engine_keeps_serving(spec_llm, monkeypatch):
    engine = spec_llm.engine
    batch = prompts(4)
    reference = alone(spec_llm, batch)
    real, calls = engine.runner.forward, []

    def forward(inputs):
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("injected: out of memory in the forward")
        return real(inputs)
    monkeypatch.setattr(engine.runner, "forward", forward)
    outs = spec_llm.generate(prompt_token_ids=batch, sampling_params=GREEDY)
    assert all(o.outputs[0].finish_reason == "error" for o in outs)
    assert all("OutOfMemoryError" in o.outputs[0].error for o in outs)
    assert all(len(o.outputs[0].token_ids) == 2 for o in outs)     # two good steps before it
    assert_idle(engine)
    monkeypatch.setattr(engine.runner, "forward", real)
    assert alone(spec_llm, batch) == reference


# ---- no finite mass: the request's error, never the engine's --------------------------------------

def test_guards_reject_rows_without_finite_mass():
    with pytest.raises(NoValidTokenError, match="-inf"):
        check_finite_mass(torch.tensor([[0.0, 1.0], [-float("inf"), -float("inf")]]))
    with pytest.raises(NoValidTokenError, match="NaN"):
        check_finite_mass(torch.tensor([[0.0, float("nan")]]))
    check_finite_mass(torch.tensor([[0.0, -float("inf")]]))
    with pytest.raises(NoValidTokenError):
        probs_from_logits(torch.full((5,), -float("inf")), SamplingParams(temperature=0.7))


def test_a_top_p_below_fp32_resolution_keeps_the_most_likely_token():
    """Found by evals.fuzz: 1e-300 rounds to 0 in fp32, which used to drop every token."""
    probs = probs_from_logits(torch.tensor([1.0, 3.0, 2.0]), SamplingParams(temperature=1.0, top_p=1e-300))
    assert probs.tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_a_mask_that_allows_nothing_fails_that_request_alone(spec_llm, monkeypatch, temperature):
    """The grammar hook (verify's masks) excludes the whole vocabulary for one request."""
    engine = spec_llm.engine
    batch = prompts(3)
    reference = alone(spec_llm, batch)
    bad = SamplingParams(temperature=temperature, max_tokens=8, ignore_eos=True, seed=1)
    real = engine.verify

    def verify(batch_, trees, logits, cu_logits, masks=None):
        words = (logits.shape[1] + 31) // 32
        masks = [torch.zeros(t.num_nodes, words, dtype=torch.int32)
                 if t is not None and s.req.params is bad else None
                 for s, t in zip(batch_.scheduled, trees)]
        return real(batch_, trees, logits, cu_logits, masks)
    monkeypatch.setattr(engine, "verify", verify)
    outs = spec_llm.generate(prompt_token_ids=batch, sampling_params=[GREEDY, bad, GREEDY])
    assert outs[1].outputs[0].finish_reason == "error" and "no finite mass" in outs[1].outputs[0].error \
        or "no token is allowed" in outs[1].outputs[0].error
    assert [outs[0].outputs[0].token_ids, outs[2].outputs[0].token_ids] == [reference[0], reference[2]]
    assert_idle(engine)


# ---- aborts ------------------------------------------------------------------------------------------

def test_random_aborts_among_64_speculating_requests_leave_no_block_in_use(spec_llm, monkeypatch):
    engine = spec_llm.engine
    rng = random.Random(7)
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    live = [engine.add_request(f"abort-{i}", ids, params) for i, ids in enumerate(prompts(64))]
    real, mid_step = engine.runner.forward, []

    def forward(inputs):            # abort someone between drafting and verification
        if live and rng.random() < 0.3:
            rid = live.pop(rng.randrange(len(live)))
            engine.abort_request(rid)
            assert rid in engine.requests, "an abort during a step waits for the step's end"
            mid_step.append(rid)
        return real(inputs)
    monkeypatch.setattr(engine.runner, "forward", forward)
    drafted_before, between = engine.spec_metrics.num_drafted, 0
    for _ in range(200):
        if not engine.has_unfinished_requests():
            break
        earlier = list(mid_step)
        for out in engine.step():
            assert out.request_id not in earlier, "an aborted request emits nothing more"
            if out.request_id in mid_step:     # aborted in this step: only a final output it reached
                assert out.finished and out.outputs[0].finish_reason == "length"
            elif out.finished:
                live.remove(out.request_id)
        if live and rng.random() < 0.3:
            engine.abort_request(live.pop(rng.randrange(len(live))))
            between += 1
        for rid in mid_step:
            assert rid not in engine.requests
    assert not live and mid_step and between
    assert engine.spec_metrics.num_drafted > drafted_before
    assert_idle(engine)
    assert engine.block_manager.ref_counts == [0] * engine.block_manager.num_blocks


def test_abort_releases_draft_model_state(tiny_model_dir):
    llm = LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=64, check_invariants=True,
              speculative_config={"method": "draft_model", "num_speculative_tokens": 2, "draft_num_layers": 1,
                                  "adaptive": False})
    engine = llm.engine
    rid = engine.add_request("d", prompts(1)[0], GREEDY)
    req = engine.requests[rid]
    for _ in range(3):
        engine.step()
    assert req.spec is not None and req.block_table
    llm.abort_request(rid)
    assert req.spec is None and req.block_table == [] and req.finish_reason == "abort"
    assert_idle(engine)
