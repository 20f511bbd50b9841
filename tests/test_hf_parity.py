"""End-to-end truths on the real bundled model: our engine against HF transformers (fp32)."""
import torch

from specdec import SamplingParams
from specdec.model_runner import build_step_inputs
from specdec.request import Request
from specdec.scheduler import SchedulerOutput, ScheduledRequest
from tests.prompts import CHAT_PROMPTS, chat_ids

NEAR_TIE = 1e-4
NUM_NEW_TOKENS = 64


def test_logits_match_hf_for_a_batch(llm_fp32, hf_model):
    """One forward over a ragged batch of 4 prompts; last-token logits vs HF per prompt."""
    engine = llm_fp32.engine
    tok = llm_fp32.tokenizer
    prompts = [chat_ids(tok, p) for p in CHAT_PROMPTS[:4]]
    reqs = [Request(f"parity-{i}", ids, SamplingParams(), engine.eos_token_ids) for i, ids in enumerate(prompts)]
    batch = SchedulerOutput()
    for r in reqs:
        assert engine.block_manager.allocate(r, r.num_tokens)
        batch.scheduled.append(ScheduledRequest(r, r.num_tokens))
    try:
        inputs = build_step_inputs(batch, [None] * len(reqs), engine.config.block_size, "cpu")
        logits = engine.runner.forward(inputs)
    finally:
        for r in reqs:
            engine.block_manager.free(r)
    worst = 0.0
    for i, ids in enumerate(prompts):
        with torch.no_grad():
            ref = hf_model(torch.tensor([ids])).logits[0, -1].float()
        diff = (logits[i] - ref).abs().max().item()
        worst = max(worst, diff)
        assert logits[i].argmax() == ref.argmax()
    print(f"max |logit diff| vs HF over 4 prompts: {worst:.2e}")
    assert worst < 1e-3


def _check_same_or_near_tie(ours: list[int], ref: list[int], prompt: list[int], hf_model, label: str):
    """Token-identical, or the first divergence is at a near-tie of HF's top-2 logits."""
    if ours == ref:
        return True
    k = next(i for i, (a, b) in enumerate(zip(ours, ref)) if a != b) if any(
        a != b for a, b in zip(ours, ref)) else min(len(ours), len(ref))
    assert k < min(len(ours), len(ref)), f"{label}: one output stops early at {k} without divergence"
    with torch.no_grad():
        logits = hf_model(torch.tensor([prompt + ref[:k]])).logits[0, -1].float()
    top2 = logits.topk(2).values
    gap = (top2[0] - top2[1]).item()
    assert gap < NEAR_TIE, f"{label}: diverges at token {k} (ours {ours[k]}, HF {ref[k]}) with top-2 gap {gap:.2e}"
    print(f"{label}: near-tie divergence at token {k}, gap {gap:.2e}")
    return False


def test_greedy_matches_hf_generate_on_20_chat_prompts(llm_fp32, hf_model):
    tok = llm_fp32.tokenizer
    prompts = [chat_ids(tok, p) for p in CHAT_PROMPTS]
    assert len(prompts) >= 20
    # both sides stop at EOS or after 64 tokens (HF's min_new_tokens would mask EOS instead)
    params = SamplingParams(temperature=0.0, max_tokens=NUM_NEW_TOKENS)
    outs = llm_fp32.generate(prompt_token_ids=prompts, sampling_params=params)
    identical = 0
    for i, (ids, out) in enumerate(zip(prompts, outs)):
        with torch.no_grad():
            ref = hf_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=NUM_NEW_TOKENS, do_sample=False, pad_token_id=tok.eos_token_id)[0, len(ids):].tolist()
        ours = out.outputs[0].token_ids
        assert 1 <= len(ours) <= NUM_NEW_TOKENS
        identical += _check_same_or_near_tie(ours, ref, ids, hf_model, f"prompt {i}")
    print(f"{identical}/{len(prompts)} token-identical to HF generate")


def test_batch_invariance_16_prompts(llm_fp32, hf_model):
    """Alone vs one batch of 16 prompts of different lengths: identical greedy tokens."""
    tok = llm_fp32.tokenizer
    prompts = [chat_ids(tok, p) for p in CHAT_PROMPTS[:16]]
    assert len({len(p) for p in prompts}) > 4
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
    batched = llm_fp32.generate(prompt_token_ids=prompts, sampling_params=params)
    for i, ids in enumerate(prompts):
        alone = llm_fp32.generate(prompt_token_ids=[ids], sampling_params=params)[0]
        _check_same_or_near_tie(batched[i].outputs[0].token_ids, alone.outputs[0].token_ids, ids,
                                hf_model, f"batch-vs-alone {i}")
