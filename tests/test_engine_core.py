"""Engine core: prefix cache, pool exhaustion and preemption, abort, bad input.

The bundled SmolLM2 in fp32 (`llm_fp32`) for the prefix cache, abort and bad input; the
tiny random Llama for the 64-request preemption run, which takes ~50 engine steps.

Every test leaves the shared engines idle (nothing queued, every block free), and
most check it: a leak in one test would show up here rather than as a slow drift.
"""
from __future__ import annotations

import json

import pytest

from specdec import LLM, SamplingParams
from specdec.models.config import UnsupportedArchitectureError

GREEDY4 = SamplingParams(temperature=0.0, max_tokens=4)


def assert_idle(engine) -> None:
    assert engine.requests == {}
    assert not engine.scheduler.waiting and not engine.scheduler.running
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    assert engine.block_manager.ref_counts == [0] * engine.block_manager.num_blocks


def drive(engine, prompts: list[list[int]], params: list[SamplingParams], max_steps: int = 500):
    """Queue every prompt, step until all finish. Returns (outputs by input order, Requests)."""
    rids = [engine.add_request(None, ids, p) for ids, p in zip(prompts, params)]
    reqs = [engine.requests[r] for r in rids]
    final = {}
    for _ in range(max_steps):
        if not engine.has_unfinished_requests():
            break
        for out in engine.step():
            if out.finished:
                final[out.request_id] = out
    assert not engine.has_unfinished_requests(), f"still unfinished after {max_steps} steps"
    return [final[r] for r in rids], reqs


# ---- prefix cache ------------------------------------------------------------------------

def test_prefix_cache_reuses_full_blocks_and_keeps_greedy_output(llm_fp32):
    engine, bs = llm_fp32.engine, llm_fp32.engine.config.block_size
    text = ("Quokka lanterns 7319 drift over the basalt harbour while eleven violinists tune "
            "their instruments, and the lighthouse keeper counts herons, barges, kites, "
            "clocks and copper kettles until the tide turns silver and the gulls fall asleep.")
    ids = llm_fp32.tokenizer.encode(text)
    assert len(ids) >= 3 * bs + 5
    exact = ids[:3 * bs]                  # three full blocks
    longer = ids[:3 * bs + 5]

    def run(prompt):
        (out,) = llm_fp32.generate(prompt_token_ids=[prompt], sampling_params=GREEDY4)
        return out

    first = run(exact)
    assert first.metrics.num_cached_prompt_tokens == 0
    second = run(exact)
    # every full block but the one holding the last prompt token, whose logits are needed
    assert second.metrics.num_cached_prompt_tokens == (len(exact) - 1) // bs * bs == 2 * bs
    assert second.outputs[0].token_ids == first.outputs[0].token_ids
    third = run(longer)
    assert third.metrics.num_cached_prompt_tokens == (len(longer) - 1) // bs * bs == 3 * bs
    assert_idle(engine)


# ---- pool exhaustion and preemption --------------------------------------------------------

def short_prompts(tokenizer, n: int, max_len: int) -> list[list[int]]:
    words = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "river", "stone"]
    prompts = []
    for i in range(n):
        text = f"Item {i}: the {words[i % 10]} {words[(i // 10) % 10]} is next to the old wooden bridge"
        prompts.append(tokenizer.encode(text)[:max_len])
    return prompts


def test_pool_exhaustion_preempts_and_recomputes_exactly(tiny_llm, tiny_model_dir):
    # The tiny model: on the real one this needs ~50 steps of 30 layers (minutes on a busy
    # 2-core machine). Its greedy output just repeats the last token, so each request samples
    # with its own seed and a repetition penalty: any K/V error after a recompute would
    # change the distributions, and the seeded draws with them.
    bs = tiny_llm.engine.config.block_size
    new_tokens = 8
    prompts = short_prompts(tiny_llm.tokenizer, 64, bs - 2)
    assert len({tuple(p) for p in prompts}) == 64 and min(map(len, prompts)) == bs - 2
    # each request ends at 2 blocks (prompt + 8 < 2 * bs): 16 blocks hold about 8 of them,
    # but 16 are admitted at 1 block each and then all need a second one
    per_request = -(-(max(map(len, prompts)) + new_tokens) // bs)
    assert per_request == 2
    num_blocks = 8 * per_request
    params = [SamplingParams(temperature=4.0, repetition_penalty=2.0, seed=i, max_tokens=new_tokens,
                             ignore_eos=True) for i in range(64)]

    reference, ref_reqs = drive(tiny_llm.engine, prompts, params)
    assert sum(r.num_preemptions for r in ref_reqs) == 0
    assert len({tuple(o.outputs[0].token_ids) for o in reference}) == 64

    small = LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=num_blocks, max_num_seqs=64)
    outs, reqs = drive(small.engine, prompts, params)
    assert sum(r.num_preemptions for r in reqs) > 0
    assert all(o.outputs[0].finish_reason == "length" for o in outs)
    assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in reference]
    assert [o.outputs[0].text for o in outs] == [o.outputs[0].text for o in reference]
    assert_idle(small.engine)
    assert_idle(tiny_llm.engine)


# ---- abort ---------------------------------------------------------------------------------

def test_abort_mid_way_frees_blocks(llm_fp32):
    engine = llm_fp32.engine
    tok = llm_fp32.tokenizer
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    a = engine.add_request("abort-a", tok.encode("Abort me: the first prompt of two"), params)
    b = engine.add_request("abort-b", tok.encode("Keep me, the second prompt"), params)
    req_a = engine.requests[a]
    for _ in range(2):
        engine.step()
    assert req_a.num_output_tokens == 2 and req_a.block_table
    free_before, held = engine.block_manager.num_free_blocks, len(req_a.block_table)
    engine.abort_request(a)
    assert engine.block_manager.num_free_blocks == free_before + held
    assert req_a.block_table == [] and req_a.finish_reason == "abort" and req_a.is_finished
    assert req_a not in engine.scheduler.running and a not in engine.requests
    c = engine.add_request("abort-c", tok.encode("Never scheduled"), params)
    assert engine.requests[c] in engine.scheduler.waiting
    engine.abort_request(c)                                   # aborting a waiting request
    assert not engine.scheduler.waiting
    engine.abort_request("no-such-request")                   # unknown ids are ignored
    finished = {}
    for _ in range(20):
        for out in engine.step():
            assert out.request_id == b
            if out.finished:
                finished[out.request_id] = out
    assert len(finished[b].outputs[0].token_ids) == 6
    assert_idle(engine)


# ---- bad input -----------------------------------------------------------------------------

def test_bad_prompts_raise_clearly_and_the_engine_keeps_serving(llm_fp32):
    engine = llm_fp32.engine
    vocab = engine.model_config.vocab_size
    with pytest.raises(ValueError, match="empty"):
        llm_fp32.generate("")
    with pytest.raises(ValueError, match="empty"):
        llm_fp32.generate(prompt_token_ids=[[]])
    with pytest.raises(ValueError, match=f"context limit is {engine.max_model_len}"):
        llm_fp32.generate(prompt_token_ids=[[42] * engine.max_model_len])
    with pytest.raises(ValueError, match=str(vocab)):
        llm_fp32.generate(prompt_token_ids=[[42, vocab]])
    with pytest.raises(ValueError, match=str(vocab)):
        llm_fp32.generate(prompt_token_ids=[[-1, 42]])
    with pytest.raises(ValueError, match="max_tokens"):
        llm_fp32.generate("Hi", SamplingParams(max_tokens=0))
    with pytest.raises(ValueError, match="logit_bias"):
        llm_fp32.generate("Hi", SamplingParams(logit_bias={vocab + 5: 1.0}))
    assert_idle(engine)
    (out,) = llm_fp32.generate("Hi", GREEDY4)
    assert out.finished and len(out.outputs[0].token_ids) >= 1
    assert_idle(engine)


def test_one_bad_prompt_leaves_nothing_of_the_batch_queued(llm_fp32):
    engine = llm_fp32.engine
    vocab = engine.model_config.vocab_size
    good = [[42, 43, 44], [50, 51], [60, 61, 62, 63]]
    with pytest.raises(ValueError, match=str(vocab)):
        llm_fp32.generate(prompt_token_ids=[good[0], good[1], [7, vocab + 1], good[2]])
    assert_idle(engine)
    bad_params = [GREEDY4, GREEDY4, SamplingParams(stop_token_ids=[vocab])]
    with pytest.raises(ValueError, match="stop_token_ids"):
        llm_fp32.generate(prompt_token_ids=good, sampling_params=bad_params)
    assert_idle(engine)


def test_prompt_at_the_context_limit_stops_with_length(tiny_llm):
    engine = tiny_llm.engine
    limit = engine.max_model_len
    (out,) = tiny_llm.generate(prompt_token_ids=[[42] * (limit - 1)],
                               sampling_params=SamplingParams(max_tokens=10, ignore_eos=True))
    assert len(out.outputs[0].token_ids) == 1 and out.outputs[0].finish_reason == "length"
    assert_idle(engine)


def test_unknown_architecture_is_named(tmp_path):
    config = {"architectures": ["GPT2LMHeadModel"], "vocab_size": 32, "hidden_size": 16,
              "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError, match="GPT2LMHeadModel"):
        LLM(model=str(tmp_path), dtype="float32")


def test_missing_model_path_is_named(tmp_path):
    missing = tmp_path / "no_such_model_dir"
    with pytest.raises(FileNotFoundError, match="no_such_model_dir"):
        LLM(model=str(missing), dtype="float32")
