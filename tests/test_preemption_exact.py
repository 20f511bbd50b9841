"""A request preempted under KV-memory pressure and recomputed continues with exactly the
tokens it would have produced without the preemption, plain and speculative, on the bundled
model in the default configuration: the recompute prefills the prompt as before and the
generated tokens row by row, as they were first decoded (model_runner.causal_segment)."""
import pytest

PROMPTS = ["Write a limerick about a cat who learns to code.",
           "List five uses of a paperclip, one per line.",
           "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
           "Explain in two sentences why the sky is blue."]


def _run(num_kv_blocks, speculative_config):
    from specdec import LLM, SamplingParams
    llm = LLM(num_kv_blocks=num_kv_blocks, speculative_config=speculative_config,
              enable_prefix_caching=False)
    preempted = []
    llm.engine.scheduler.on_preempt = lambda req, f=llm.engine.scheduler.on_preempt: (
        preempted.append(req.request_id), f(req))
    outs = llm.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=48, ignore_eos=True))
    return [o.outputs[0].token_ids for o in outs], preempted


@pytest.mark.slow
def test_preempted_requests_recompute_exactly():
    reference, none = _run(None, None)
    assert not none
    # 4 requests x ~40-60 tokens of context need ~16 blocks of 16; 9 forces preemptions
    plain, preempted = _run(9, None)
    assert preempted, "the small pool should have preempted somebody"
    assert plain == reference
    spec, preempted = _run(9, {"method": "ngram", "num_speculative_tokens": 4, "adaptive": False})
    assert preempted
    assert spec == reference
