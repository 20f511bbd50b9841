"""End-to-end truths of speculation on the real bundled model (greedy): speculative output is
token-identical to plain output, for every proposer and tree shape, in the DEFAULT configuration
(quantized GGUF weights, bf16 matmul inputs, row-invariant attention) and on the fp32 path.

Requests run one at a time (batch 1): decode and verify rows are computed identically inside
any batch, but how a prompt's prefill is chunked depends on what else is in the step, so a
batched greedy run is not batch-invariant (vLLM's isn't either)."""
import pytest

from evals.datasets import chat_token_ids, load_prompts
from specdec import LLM, SamplingParams

MAX_TOKENS = 32
# adaptive off everywhere: every step drafts at full depth, so every verify path is exercised
# (the cost-aware policy only decides how much to draft; it cannot change what is emitted)
CONFIGS = {
    "ngram-chain": {"method": "ngram", "num_speculative_tokens": 4, "adaptive": False},
    "ngram-tree": {"method": "ngram", "num_speculative_tokens": 3, "tree_width": 3, "adaptive": False},
    # the target as its own draft: nearly every draft is accepted, so deep accepted paths and
    # tree commits (accepted node index != depth) are exercised; the random tiny draft below
    # covers the reject-everything path
    "draft-chain": {"method": "draft_model", "num_speculative_tokens": 3, "adaptive": False},
    "draft-tree": {"method": "draft_model", "num_speculative_tokens": 3, "tree": {"width": 2, "topk": 2},
                   "adaptive": False},
    # the shipped EAGLE head, dynamic tree at full depth (adaptive off: every step drafts)
    "eagle-tree": {"method": "eagle", "adaptive": False},
    "hybrid": {"method": "hybrid", "adaptive": False},
}


@pytest.fixture(scope="module")
def prompts(llm_default):
    ps = load_prompts("mtbench", 12) + load_prompts("humaneval", 12)
    assert len(ps) == 24
    return [chat_token_ids(llm_default.tokenizer, p) for p in ps]


@pytest.fixture(scope="module")
def plain_outputs(llm_default, prompts):
    return _run(llm_default, prompts)


def _run(llm, prompts):
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    return [llm.generate(prompt_token_ids=[p], sampling_params=params)[0].outputs[0].token_ids
            for p in prompts]


# the self-draft runs all 30 layers per draft token: fewer prompts keep the suite's time down
NUM_PROMPTS = {"ngram-chain": 24, "ngram-tree": 24, "draft-chain": 8, "draft-tree": 8, "eagle-tree": 12,
               "hybrid": 6}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_speculative_greedy_equals_plain_one_request_at_a_time(name, prompts, plain_outputs):
    llm = LLM(speculative_config=CONFIGS[name], kv_cache_memory=256 * 2**20)
    n = NUM_PROMPTS[name]
    outs = _run(llm, prompts[:n])
    mismatched = [i for i, (a, b) in enumerate(zip(outs, plain_outputs[:n])) if a != b]
    assert not mismatched, f"{name}: prompts {mismatched} differ from plain decoding"
    m = llm.engine.spec_metrics
    assert m.num_drafted > 0, "the proposer never drafted: the test proved nothing"
    assert llm.engine.block_manager.num_free_blocks == llm.engine.block_manager.num_blocks
    print(f"{name}: tau {m.tau:.2f}, acceptance {m.acceptance_rate:.2f}, per depth "
          f"{[round(a / max(d, 1), 2) for a, d in zip(m.accepted_per_depth, m.drafted_per_depth)]}")


def test_fp32_path_speculation_equals_its_plain_decoding(llm_fp32, prompts):
    """The dequantized fp32 path (exact against HF) keeps spec == plain too."""
    llm = LLM(dtype="float32", quantization=None, speculative_config=CONFIGS["ngram-tree"])
    assert _run(llm, prompts[:8]) == _run(llm_fp32, prompts[:8])
    assert llm.engine.spec_metrics.num_drafted > 0


def test_a_draft_that_rejects_everything_still_gives_plain_output(tiny_model_dir, prompts, plain_outputs):
    """A random-weight draft with the same tokenizer: nearly every draft is rejected."""
    llm = LLM(speculative_config={"method": "draft_model", "model": tiny_model_dir,
                                                   "num_speculative_tokens": 3, "adaptive": False})
    outs = _run(llm, prompts[:12])
    assert outs == plain_outputs[:12]
    m = llm.engine.spec_metrics
    assert m.num_drafted > 0 and m.acceptance_rate < 0.2


def test_mixed_batch_plain_and_different_depths_in_one_step(prompts):
    """Per-request num_speculative_tokens: 0 (plain), 1, 2 and the default share every step.

    A budget that prefills all 16 prompts in the first step makes both runs chunk their
    prompts the same way, so the batched outputs must match token for token."""
    params_for = lambda ks: [SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, num_speculative_tokens=k)
                             for k in ks]
    kw = dict(max_num_batched_tokens=8192, speculative_config={
        "method": "ngram", "num_speculative_tokens": 4, "adaptive": False})
    plain = LLM(**kw).generate(prompt_token_ids=prompts[:16], sampling_params=params_for([0] * 16))
    ks = [0, 1, 2, None] * 4
    llm = LLM(**kw)
    outs = llm.generate(prompt_token_ids=prompts[:16], sampling_params=params_for(ks))
    assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in plain]
    for k, o in zip(ks, outs):
        depth = len(o.metrics.drafted_per_depth)
        if k == 0:
            assert o.metrics.num_drafted_tokens == 0
        elif k is not None:
            assert depth <= k
    assert sum(o.metrics.num_drafted_tokens for o in outs) > 0


def test_draft_with_a_different_vocabulary_is_refused(tmp_path, bundled_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path, safe_serialization=True)
    bundled_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="different vocabulary"):
        LLM(dtype="float32", speculative_config={"method": "draft_model", "model": str(tmp_path)})


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="not available"):
        LLM(dtype="float32", speculative_config={"method": "medusa"})
