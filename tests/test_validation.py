"""Validation at every boundary: SamplingParams, prompts, chat messages, engine and
speculative configs. Each failure is a ValueError naming the field and its range."""
from __future__ import annotations

import pytest

from specdec import SamplingParams
from specdec.chat_messages import normalize_messages, render_tool_calls_as_text
from specdec.config import EngineConfig

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=NAN), r"temperature must be a finite number >= 0.0, got nan"),
    (dict(top_p=INF), r"top_p must be a finite number in \(0.0, 1.0\]"),
    (dict(logit_bias={5: NAN}), r"logit_bias\[5\] must be a finite number in \[-100.0, 100.0\]"),
    (dict(logit_bias={True: 1.0}), r"logit_bias key must be an integer >= 0, got a bool"),
    (dict(logit_bias=[(5, 1.0)]), r"logit_bias must be a dict"),
    (dict(seed=2**64), r"seed must be an integer in \[0, 18446744073709551615\]"),
    (dict(seed=-1), r"seed must be an integer in \[0, "),
    (dict(seed=1.5), r"seed must be an integer"),
    (dict(max_tokens=True), r"max_tokens must be an integer >= 1 or None, got a bool"),
    (dict(max_tokens="8"), r"max_tokens must be an integer"),
    (dict(top_k=2.0), r"top_k must be an integer >= -1"),
    (dict(temperature=1e-9), r"temperature must be 0 \(greedy\) or >= 1e-05"),
    (dict(repetition_penalty=0.0), r"repetition_penalty must be a finite number in \[0.01, 100.0\]"),
    (dict(stop=["ok", 3]), r"stop\[1\] must be a string"),
    (dict(stop="\ud800"), r"stop\[0\] is not valid Unicode"),
    (dict(stop=["x"] * 65), r"stop must have at most 64 strings"),
    (dict(stop="y" * 1025), r"stop\[0\] must be at most 1024 characters"),
    (dict(stop_token_ids=[1, -2]), r"stop_token_ids\[1\] must be an integer >= 0"),
    (dict(stop_token_ids=5), r"stop_token_ids must be a list"),
    (dict(ignore_eos=1), r"ignore_eos must be true or false"),
    (dict(logprobs=True), r"logprobs must be an integer in \[0, 20\]"),
    (dict(num_speculative_tokens=17), r"num_speculative_tokens must be an integer in \[0, 16\]"),
])
def test_sampling_params_name_the_field_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_params_changed_after_construction_are_checked_when_added(tiny_llm):
    params = SamplingParams(temperature=0.0, max_tokens=2)
    params.temperature = NAN                        # the repro: it used to poison the engine
    with pytest.raises(ValueError, match="temperature"):
        tiny_llm.generate("Hello", params)
    params.temperature = 0.0
    (out,) = tiny_llm.generate("Hello", params)
    assert out.outputs[0].finish_reason == "length" and len(out.outputs[0].token_ids) == 2
    assert tiny_llm.engine.requests == {}


def test_prompts_are_checked_before_the_tokenizer(tiny_llm):
    with pytest.raises(ValueError, match=r"prompts\[1\] is not valid Unicode"):
        tiny_llm.generate(["fine", "bad \udc80 text"])
    with pytest.raises(ValueError, match=r"prompts\[0\] must be a string"):
        tiny_llm.generate([b"bytes"])
    with pytest.raises(ValueError, match=r"prompt_token_ids\[1\] must be an integer .*got a bool"):
        tiny_llm.generate(prompt_token_ids=[[5, True]])
    with pytest.raises(ValueError, match="prompt_token_ids must be a list of token ids"):
        tiny_llm.generate(prompt_token_ids=[7])
    with pytest.raises(ValueError, match="sampling_params must be a SamplingParams"):
        tiny_llm.generate("hi", sampling_params={"temperature": 0})
    assert tiny_llm.engine.requests == {} and not tiny_llm.engine.has_unfinished_requests()


# ---- chat messages --------------------------------------------------------------------------------

def test_openai_message_shapes_are_normalised():
    msgs = normalize_messages([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": "18 C", "tool_call_id": "call_1"},
    ])
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[1]["content"] == "Weather in Paris?"
    assert msgs[2]["content"] == "" and msgs[2]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert msgs[3] == {"role": "tool", "content": "18 C", "tool_call_id": "call_1"}
    folded = render_tool_calls_as_text(msgs)
    assert "tool_calls" not in folded[2]
    assert folded[2]["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize("messages, message", [
    ([], r"messages must be a non-empty list"),
    (["hi"], r"messages\[0\] must be an object"),
    ([{"role": "bot", "content": "x"}], r"messages\[0\].role must be one of"),
    ([{"role": "user"}], r"messages\[0\].content is required"),
    ([{"role": "user", "content": None}], r"messages\[0\].content is required"),
    ([{"role": "user", "content": 5}], r"messages\[0\].content must be a string, a list of text parts or null"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], r"only text parts"),
    ([{"role": "user", "content": [{"type": "text", "text": None}]}], r"content\[0\].text must be a string"),
    ([{"role": "user", "content": "a \ud800"}], r"messages\[0\].content is not valid Unicode"),
    ([{"role": "tool", "content": "18 C"}], r"tool_call_id is required"),
    ([{"role": "user", "content": "x", "tool_calls": []}], r"tool_calls is only allowed on assistant"),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{not json"}}]}], r"arguments is not valid JSON"),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "[1]"}}]}], r"arguments must be a JSON object"),
])
def test_bad_messages_name_the_message_and_field(messages, message):
    with pytest.raises(ValueError, match=message):
        normalize_messages(messages)


def test_chat_with_tool_messages_runs_through_the_template(tiny_llm):
    convo = [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
             {"role": "assistant", "content": None, "tool_calls": [
                 {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
             {"role": "tool", "content": "sunny", "tool_call_id": "c1"}]
    text = tiny_llm.apply_chat_template(convo)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>' in text
    (out,) = tiny_llm.chat(convo, SamplingParams(temperature=0.0, max_tokens=2))
    assert out.finished and len(out.outputs[0].token_ids) == 2
    with pytest.raises(ValueError, match=r"messages\[0\].content is required"):
        tiny_llm.chat([{"role": "user", "content": None}])


# ---- configs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(block_size=12), r"block_size must be a multiple of 8"),
    (dict(block_size=True), r"block_size must be an integer .*got a bool"),
    (dict(max_num_seqs=0), r"max_num_seqs must be an integer >= 1"),
    (dict(num_kv_blocks=-3), r"num_kv_blocks must be an integer >= 1 or None"),
    (dict(seed=2**64), r"seed must be an integer in \[0, "),
    (dict(max_model_len=1.5), r"max_model_len must be an integer >= 2 or None"),
    (dict(enable_prefix_caching="yes"), r"enable_prefix_caching must be true or false"),
    (dict(speculative_config={"method": "medusa"}), r"speculative method 'medusa' is not available"),
    (dict(speculative_config={"num_speculative_tokens": 3}), r"needs a 'method'"),
    (dict(speculative_config={"method": "ngram", "num_speculative_tokens": 0}),
     r"num_speculative_tokens must be an integer in \[1, 16\]"),
    (dict(speculative_config={"method": "ngram", "ngram_min": 3, "ngram_max": 2}),
     r"ngram_max must be an integer in \[3, 64\]"),
    (dict(speculative_config={"method": "ngram", "tree": {"width": 2, "depth": 3}}), r"unknown .*'depth'"),
    (dict(speculative_config={"method": "draft_model", "tree_topk": 0}), r"tree_topk must be an integer in \[1, 64\]"),
    (dict(speculative_config="ngram"), r"speculative_config must be a dict"),
])
def test_engine_and_speculative_configs_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**kwargs)
