"""HF runner on a tiny random Llama: fixed length, timestamps, forward counts, greedy parity."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from evals.runners.hf import HFRunner

PROMPT = [5, 9, 17, 5, 9, 17, 5, 9, 17, 5, 9]  # repetitive, so prompt lookup finds drafts


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return LlamaForCausalLM(cfg).eval()


def test_plain_greedy_times_every_token_and_counts_forwards(tiny_model):
    g = HFRunner("HF generate", tiny_model, eos_token_id=63).generate(PROMPT, 12, ignore_eos=True)
    assert len(g.token_ids) == len(g.token_times) == 12
    assert g.token_times[0] >= g.arrival_time
    assert all(b > a for a, b in zip(g.token_times, g.token_times[1:]))  # one token per step
    assert g.num_forwards == 12 and g.tau == 1.0  # prefill emits token 1, then one forward each


def test_ignore_eos_keeps_fixed_length(tiny_model):
    free = HFRunner("HF", tiny_model, eos_token_id=63).generate(PROMPT, 12, ignore_eos=True)
    eos = free.token_ids[0]  # make the very first output token the EOS
    tiny_model.generation_config.eos_token_id = eos
    try:
        runner = HFRunner("HF", tiny_model, eos_token_id=eos)
        fixed = runner.generate(PROMPT, 12, ignore_eos=True)
        stopped = runner.generate(PROMPT, 12, ignore_eos=False)
    finally:
        tiny_model.generation_config.eos_token_id = 2
    assert fixed.token_ids == free.token_ids
    assert stopped.token_ids == [eos]
    assert tiny_model.generation_config.eos_token_id == 2  # restored


def test_prompt_lookup_matches_plain_greedy(tiny_model):
    plain = HFRunner("HF", tiny_model, eos_token_id=63).generate(PROMPT, 16, ignore_eos=True)
    pld = HFRunner("HF pld", tiny_model, eos_token_id=63, prompt_lookup_num_tokens=4).generate(
        PROMPT, 16, ignore_eos=True)
    assert pld.token_ids == plain.token_ids
    assert len(pld.token_times) == 16 and pld.num_forwards <= 16


def test_batch_generate_counts_all_tokens(tiny_model):
    res = HFRunner("HF", tiny_model, eos_token_id=63).generate_batch([PROMPT, PROMPT[:4]], 6, ignore_eos=True)
    assert [len(g.token_ids) for g in res.generations] == [6, 6]
    assert res.output_tok_s == pytest.approx(12 / res.wall_time)
    single = HFRunner("HF", tiny_model, eos_token_id=63).generate(PROMPT, 6, ignore_eos=True)
    assert res.generations[0].token_ids == single.token_ids  # the longest prompt needs no padding


def test_early_exit_matches_plain_and_counts_only_full_depth_forwards(tiny_model):
    plain = HFRunner("HF", tiny_model, eos_token_id=63).generate(PROMPT, 16, ignore_eos=True)
    ee = HFRunner("HF ee", tiny_model, eos_token_id=63, assistant_early_exit=1,
                  num_assistant_tokens=3).generate(PROMPT, 16, ignore_eos=True)
    assert ee.token_ids == plain.token_ids
    assert 16 / 4 <= ee.num_forwards <= 16  # each full forward emits 1..(3 drafts + 1) tokens
    assert tiny_model.config.num_hidden_layers == 2  # restored after drafting
