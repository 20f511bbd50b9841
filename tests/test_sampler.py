"""Sampling parameters: validation, the sampler on hand-built logits, and each setting end to end.

The sampler tests build logits whose answer is known by hand (a nucleus that can be
added up on paper, penalties on chosen token ids). The end-to-end tests run the tiny
random-weight Llama (`tiny_llm`); their expectations come from a first run of the same
engine (a stop token / string picked out of it) or from HF transformers' forward of the
same weights (logprobs). Its tied embeddings make greedy decoding repeat the last token,
so runs that need varied text sample at a high temperature, with a repetition penalty and
a fixed seed.
"""
from __future__ import annotations

import math

import pytest
import torch

from specdec.sampler import (RowContext, apply_penalties_and_bias, make_logprob, probs_from_logits,
                             sample, target_probs)
from specdec.sampling_params import SamplingParams

PROMPT = "Once upon a time, in a small village by the sea,"
# varied but reproducible output from the tiny model (greedy just repeats the last token)
VARIED = dict(temperature=4.0, repetition_penalty=2.0, seed=11, max_tokens=16, ignore_eos=True)


def row(params: SamplingParams, prompt_ids=(), output_ids=(), generator=None) -> RowContext:
    return RowContext(params, list(prompt_ids), list(output_ids), generator)


def support(probs: torch.Tensor) -> set[int]:
    return set(torch.nonzero(probs > 0).flatten().tolist())


# ---- SamplingParams validation -------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    (dict(max_tokens=0), "max_tokens"),
    (dict(max_tokens=-3), "max_tokens"),
    (dict(temperature=-0.1), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=-2), "top_k"),
    (dict(min_p=1.5), "min_p"),
    (dict(min_p=-0.1), "min_p"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(frequency_penalty=2.5), "frequency_penalty"),
    (dict(presence_penalty=-2.5), "presence_penalty"),
    (dict(logprobs=-1), "logprobs"),
    (dict(logprobs=21), "logprobs"),
    (dict(n=2), "n=1"),
    (dict(stop=["ok", ""]), "stop"),
])
def test_bad_sampling_params_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_sampling_params_normalization():
    assert SamplingParams(stop="END").stop == ["END"]
    assert SamplingParams(top_k=0).top_k == -1          # 0 means off, like -1
    assert SamplingParams(temperature=0.0).is_greedy
    assert not SamplingParams(temperature=0.5).is_greedy
    assert SamplingParams(presence_penalty=0.5).has_penalties
    assert not SamplingParams().has_penalties


# ---- the sampler on constructed logits --------------------------------------------------

def test_greedy_is_argmax():
    logits = torch.tensor([0.3, 2.0, -1.0, 1.9, 0.0])
    params = SamplingParams(temperature=0.0)
    probs = probs_from_logits(logits, params)
    assert probs.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert sample(probs, torch.Generator().manual_seed(0)) == 1


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_probs_are_softmax_of_scaled_logits(temperature):
    logits = torch.tensor([1.0, 0.5, -0.5, 2.0, 0.0])
    probs = probs_from_logits(logits, SamplingParams(temperature=temperature))
    torch.testing.assert_close(probs, torch.softmax(logits / temperature, -1))


def test_temperature_empirical_distribution_matches_analytic():
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    temperature = 0.7
    probs = probs_from_logits(logits, SamplingParams(temperature=temperature))
    expected = torch.softmax(logits / temperature, -1)
    gen = torch.Generator().manual_seed(1234)
    num = 4000
    counts = torch.bincount(torch.tensor([sample(probs, gen) for _ in range(num)]), minlength=4)
    freq = counts.double() / num
    sigma = (expected.double() * (1 - expected.double()) / num).sqrt()
    assert ((freq - expected.double()).abs() <= 4 * sigma).all(), (freq, expected)


def test_top_k_keeps_exactly_k_tokens():
    logits = torch.tensor([0.1, 3.0, -2.0, 1.5, 2.2, 0.7, -0.3, 1.1, 0.0, 2.9])
    probs = probs_from_logits(logits, SamplingParams(temperature=1.0, top_k=3))
    top3 = torch.topk(logits, 3).indices
    assert support(probs) == set(top3.tolist())
    torch.testing.assert_close(probs[top3], torch.softmax(logits[top3], -1))


def test_top_p_keeps_minimal_nucleus():
    # probabilities 0.5, 0.3, 0.15, 0.05, listed out of order so the sort matters
    p = torch.tensor([0.15, 0.5, 0.05, 0.3])
    logits = p.log()
    cases = {0.45: {1}, 0.75: {1, 3}, 0.85: {1, 3, 0}, 0.97: {0, 1, 2, 3}}
    for top_p, nucleus in cases.items():
        probs = probs_from_logits(logits, SamplingParams(temperature=1.0, top_p=top_p))
        assert support(probs) == nucleus, top_p
        kept = torch.tensor(sorted(nucleus))
        torch.testing.assert_close(probs[kept], p[kept] / p[kept].sum())


def test_top_p_acts_after_temperature():
    # T = 0.5 sharpens 0.6 / 0.4 into 0.69 / 0.31: with top_p 0.65 only the first is kept
    logits = torch.tensor([0.6, 0.4]).log()
    assert support(probs_from_logits(logits, SamplingParams(temperature=1.0, top_p=0.65))) == {0, 1}
    assert support(probs_from_logits(logits, SamplingParams(temperature=0.5, top_p=0.65))) == {0}


def test_min_p_drops_tokens_below_fraction_of_max():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = p.log()
    # threshold = min_p * 0.5
    assert support(probs_from_logits(logits, SamplingParams(min_p=0.2))) == {0, 1, 2}
    probs = probs_from_logits(logits, SamplingParams(min_p=0.5))
    assert support(probs) == {0, 1}
    torch.testing.assert_close(probs[:2], torch.tensor([0.5, 0.3]) / 0.8)


def test_repetition_penalty_over_prompt_and_output():
    logits = torch.tensor([[2.0, -1.0, 3.0, -2.0, 1.0, 0.5]])
    params = SamplingParams(repetition_penalty=2.0)
    # token 0 (positive) and 1 (negative) in the prompt, 2 (positive, twice) and 3 in the output
    out = apply_penalties_and_bias(logits.clone(), [row(params, prompt_ids=[0, 1], output_ids=[2, 3, 2])])
    assert out[0].tolist() == [1.0, -2.0, 1.5, -4.0, 1.0, 0.5]


def test_frequency_and_presence_penalties_count_output_only():
    logits = torch.zeros(1, 6)
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=1.0)
    out = apply_penalties_and_bias(logits.clone(), [row(params, prompt_ids=[4, 4, 1], output_ids=[1, 3, 3, 3])])
    # token 1: once in output (the prompt copy does not count); token 3: three times; 4: prompt only
    assert out[0].tolist() == pytest.approx([0.0, -1.5, 0.0, -2.5, 0.0, 0.0])


def test_logit_bias_forces_a_token_under_greedy():
    logits = torch.tensor([[5.0, 1.0, 0.0, 4.0]])
    params = SamplingParams(temperature=0.0, logit_bias={2: 10.0, 0: -1.0})
    probs = target_probs(logits, [row(params)])
    assert probs[0].argmax().item() == 2 and probs[0, 2].item() == 1.0
    assert logits.tolist() == [[5.0, 1.0, 0.0, 4.0]]          # raw logits are not modified


def test_target_probs_rows_are_independent():
    logits = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    rows = [row(SamplingParams(temperature=0.0)),
            row(SamplingParams(temperature=1.0, presence_penalty=2.0), output_ids=[2])]
    probs = target_probs(logits, rows)
    assert probs[0].tolist() == [0.0, 0.0, 1.0]
    torch.testing.assert_close(probs[1], torch.softmax(torch.tensor([0.0, 1.0, 0.0]), -1))


def test_make_logprob_matches_log_softmax():
    logits = torch.tensor([1.0, 3.0, -2.0, 0.5, 2.5])
    ref = torch.log_softmax(logits, -1)
    lp = make_logprob(logits, token_id=3, num_top=2)
    assert lp.token_id == 3 and lp.logprob == pytest.approx(ref[3].item())
    assert list(lp.top) == [1, 4]                          # sorted best first
    assert list(lp.top.values()) == pytest.approx([ref[1].item(), ref[4].item()])
    assert make_logprob(logits, token_id=1, num_top=0).top == {}


# ---- each setting end to end on the tiny model ------------------------------------------

def run_one(llm, params: SamplingParams, prompt: str = PROMPT):
    return llm.generate([prompt], params)[0].outputs[0]


def first_new_index(tokens: list[int], start: int) -> int:
    """First index >= start whose token does not occur earlier."""
    return next(i for i in range(start, len(tokens)) if tokens[i] not in tokens[:i])


def test_max_tokens_and_length_finish(tiny_llm):
    out = run_one(tiny_llm, SamplingParams(temperature=0.0, max_tokens=7, ignore_eos=True))
    assert len(out.token_ids) == 7 and out.finish_reason == "length"


def test_stop_token_ids(tiny_llm):
    full = run_one(tiny_llm, SamplingParams(**VARIED)).token_ids
    i = first_new_index(full, 2)
    out = run_one(tiny_llm, SamplingParams(**VARIED, stop_token_ids=[full[i]]))
    assert out.token_ids == full[:i + 1]
    assert out.finish_reason == "stop" and out.stop_reason == full[i]


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_cuts_text_and_never_streams_it(tiny_llm, include):
    full_text = run_one(tiny_llm, SamplingParams(**VARIED)).text
    # a 3-character stop string taken from the middle of the greedy text
    k = next(k for k in range(len(full_text) // 3, len(full_text) - 3)
             if all(c.isalnum() for c in full_text[k:k + 3]))
    stop = full_text[k:k + 3]
    k = full_text.find(stop)
    expected = full_text[:k + len(stop)] if include else full_text[:k]

    engine = tiny_llm.engine
    rid = engine.add_request(None, tiny_llm.tokenizer.encode(PROMPT),
                             SamplingParams(**VARIED, stop=[stop], include_stop_str_in_output=include))
    streamed, final = "", None
    for _ in range(20):
        for o in engine.step():
            assert o.request_id == rid
            streamed += o.outputs[0].delta_text
            if not include:
                assert stop not in streamed
            if o.finished:
                final = o.outputs[0]
    assert final is not None and final.finish_reason == "stop" and final.stop_reason == stop
    assert final.text == expected and streamed == expected


def test_ignore_eos(tiny_llm):
    eos = tiny_llm.engine.eos_token_ids[0]
    forced = {eos: 100.0}
    out = run_one(tiny_llm, SamplingParams(temperature=0.0, max_tokens=5, logit_bias=forced))
    assert out.token_ids == [eos] and out.finish_reason == "stop" and out.stop_reason is None
    out = run_one(tiny_llm, SamplingParams(temperature=0.0, max_tokens=5, logit_bias=forced, ignore_eos=True))
    assert out.token_ids == [eos] * 5 and out.finish_reason == "length"


def test_logit_bias_forces_token_end_to_end(tiny_llm):
    token = tiny_llm.tokenizer.encode(" hello")[0]
    free = run_one(tiny_llm, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
    assert free.token_ids != [token] * 4                     # the bias is what makes it so
    out = run_one(tiny_llm, SamplingParams(temperature=0.0, max_tokens=4, logit_bias={token: 100.0}))
    assert out.token_ids == [token] * 4


def test_seed_reproducible_across_batch_compositions(tiny_llm):
    def params(seed):
        return SamplingParams(**{**VARIED, "max_tokens": 8, "seed": seed})

    alone = run_one(tiny_llm, params(1234)).token_ids
    batch = tiny_llm.generate(["Hello there", PROMPT, "Another prompt, longer than the others by a bit"],
                              [params(None), params(1234), params(7)])
    assert batch[1].outputs[0].token_ids == alone
    other_seed = run_one(tiny_llm, params(4321)).token_ids
    assert other_seed != alone


def test_logprobs_equal_reference_log_softmax(tiny_llm, tiny_model_dir):
    from transformers import LlamaForCausalLM
    num_top = 5
    out = run_one(tiny_llm, SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True, logprobs=num_top))
    prompt_ids = tiny_llm.tokenizer.encode(PROMPT)
    ids = prompt_ids + out.token_ids
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    assert len(out.logprobs) == len(out.token_ids)
    for i, (token, lp) in enumerate(zip(out.token_ids, out.logprobs)):
        row_ref = ref[len(prompt_ids) - 1 + i]
        assert lp.token_id == token
        assert lp.logprob == pytest.approx(row_ref[token].item(), abs=1e-3)
        vals, top_ids = row_ref.topk(num_top)
        assert list(lp.top) == top_ids.tolist()
        assert list(lp.top.values()) == pytest.approx(vals.tolist(), abs=1e-3)
        assert lp.top[token] == pytest.approx(lp.logprob)     # greedy token is the argmax


def test_sampled_logprobs_are_consistent(tiny_llm):
    out = run_one(tiny_llm, SamplingParams(temperature=4.0, seed=3, max_tokens=6, ignore_eos=True, logprobs=3))
    assert [lp.token_id for lp in out.logprobs] == out.token_ids
    for lp in out.logprobs:
        values = list(lp.top.values())
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-5
        assert lp.logprob <= values[0] + 1e-6
        if lp.token_id in lp.top:
            assert lp.top[lp.token_id] == pytest.approx(lp.logprob)
        else:
            assert lp.logprob <= values[-1] + 1e-6


def test_a_tree_row_the_grammar_rejects_everywhere_is_not_an_error():
    """A draft node whose token the grammar rejects gets an all -inf row; only the root's row is
    sure to be used, so only it must have mass (the node can never be accepted)."""
    import pytest
    from specdec.sampler import NoValidTokenError, RowContext, check_finite_mass, target_probs
    from specdec.sampling_params import SamplingParams
    inf = float("inf")
    rows = torch.tensor([[0.0, 1.0, -inf], [-inf, -inf, -inf]])
    check_finite_mass(rows, num_rows_needing_mass=1)
    with pytest.raises(NoValidTokenError):
        check_finite_mass(rows)
    ctx = [RowContext(SamplingParams(temperature=1.0), [1], [], None)] * 2
    probs = target_probs(rows, ctx)
    assert probs[1].sum() == 0 and abs(float(probs[0].sum()) - 1) < 1e-6
    with pytest.raises(NoValidTokenError):
        target_probs(rows.flip(0), ctx)
