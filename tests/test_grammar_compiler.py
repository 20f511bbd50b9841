"""Grammar specs, the compile cache, limits and errors, and compiling off the engine's step."""
from __future__ import annotations

import json
import threading
from concurrent.futures import Future

import pytest

from grammar.compiler import GrammarCache, result_or_raise
from grammar.spec import MAX_SCHEMA_DEPTH, MAX_SPEC_CHARS, spec_from_fields
from specdec import SamplingParams

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
DEEP = json.loads('{"x":' * (MAX_SCHEMA_DEPTH + 2) + "1" + "}" * (MAX_SCHEMA_DEPTH + 2))


def json_schema(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": True}}


@pytest.fixture(scope="module")
def cache(bundled_tokenizer):
    return GrammarCache(bundled_tokenizer, vocab_size=49152 + 64)   # a model vocab wider than the tokenizer


def test_openai_shapes_map_to_specs():
    assert spec_from_fields(None, None, None, None, None) is None
    assert spec_from_fields({"type": "text"}, None, None, None, None) is None
    assert spec_from_fields({"type": "json_object"}, None, None, None, None).kind == "json_object"
    s = spec_from_fields(json_schema(SCHEMA), None, None, None, "qwen3")
    assert (s.kind, json.loads(s.source), s.reasoning) == ("json_schema", SCHEMA, "qwen3")
    assert spec_from_fields(None, r"\d+", None, None, None).kind == "regex"
    assert spec_from_fields(None, None, 'root ::= "a"', None, None).kind == "ebnf"


@pytest.mark.parametrize("kwargs, message", [
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": "json"}, "response_format must be an object"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": json_schema("{not json")}, "not valid JSON"),
    ({"response_format": json_schema([1, 2])}, "must be a JSON object"),
    ({"regex": "a", "ebnf": 'root ::= "a"'}, "at most one"),
    ({"regex": ""}, "regex must be a non-empty string"),
    ({"reasoning_parser": "o1"}, "reasoning_parser"),
    ({"regex": "a" * (MAX_SPEC_CHARS + 1)}, "limit"),
    ({"response_format": json_schema(DEEP)}, "nests deeper"),
    ({"regex": "a", "ignore_eos": True}, "ignore_eos"),
    ({"tool_call_parser": "xml"}, "tool_call_parser"),
])
def test_bad_structured_output_fields_are_value_errors_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        SamplingParams(**kwargs)


def test_repeated_schema_compiles_once(cache):
    before = cache.num_compiles
    a = SamplingParams(response_format=json_schema(SCHEMA)).grammar_spec()
    # same schema, different whitespace in its JSON text: one cache entry
    b = SamplingParams(response_format=json_schema(json.dumps(SCHEMA, indent=4))).grammar_spec()
    assert a.key == b.key
    g1, g2 = cache.compile(a), cache.compile(b)
    assert g1 is g2 and cache.num_compiles == before + 1
    cache.compile(SamplingParams(response_format=json_schema(SCHEMA), reasoning_parser="qwen3").grammar_spec())
    assert cache.num_compiles == before + 2, "reasoning changes the grammar, so it is another entry"


@pytest.mark.parametrize("kwargs, message", [
    ({"response_format": json_schema({"type": "foo"})}, "response_format.json_schema.schema does not compile"),
    ({"regex": "(abc"}, "regex does not compile"),
    ({"ebnf": "root ::= undefined_rule"}, "ebnf does not compile"),
])
def test_a_grammar_that_does_not_compile_is_a_value_error_with_the_reason(cache, kwargs, message):
    spec = SamplingParams(**kwargs).grammar_spec()
    with pytest.raises(ValueError, match=message) as e:
        cache.compile(spec)
    assert len(str(e.value)) > len(message) + 5, "the reason follows the field name"
    n = cache.num_compiles
    with pytest.raises(ValueError):
        cache.compile(spec)                      # failures are cached too
    assert cache.num_compiles == n


def test_compile_timeout_is_a_value_error():
    never: Future = Future()
    with pytest.raises(ValueError, match="longer than"):
        result_or_raise(never, 0.01)


# ---- the engine: compiling does not stall other requests -----------------------------------------

def test_slow_compile_holds_back_only_its_own_request(tiny_llm, monkeypatch):
    engine = tiny_llm.engine
    cache = engine.grammar.cache
    release = threading.Event()
    real = cache._compile

    def slow_compile(spec):
        release.wait(30)
        return real(spec)

    monkeypatch.setattr(cache, "_compile", slow_compile)
    schema = {"type": "object", "properties": {"slow": {"type": "string"}}, "required": ["slow"]}
    slow = engine.add_request(None, [1, 2, 3], SamplingParams(temperature=0, max_tokens=8,
                                                              response_format=json_schema(schema)))
    fast = engine.add_request(None, [1, 2, 3], SamplingParams(temperature=0, max_tokens=4))
    assert slow in engine.grammar.compiling
    finished = {}
    for _ in range(10):
        for out in engine.step():
            finished[out.request_id] = out
        if fast in finished:
            break
    assert fast in finished and slow not in finished, "the plain request ran while the grammar compiled"
    release.set()
    for _ in range(200):
        if not engine.has_unfinished_requests():
            break
        for out in engine.step():
            finished[out.request_id] = out
    out = finished[slow].outputs[0]
    assert out.text.startswith('{"slow": "'), out.text
    assert not engine.requests and engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_background_compile_failure_ends_only_that_request_with_the_reason(tiny_llm):
    engine = tiny_llm.engine
    bad = engine.add_request(None, [1, 2], SamplingParams(max_tokens=4, regex="[z-a]"))
    outs = {}
    for _ in range(50):
        if not engine.has_unfinished_requests():
            break
        for o in engine.step():
            outs[o.request_id] = o
    out = outs[bad].outputs[0]
    assert outs[bad].finished and out.finish_reason == "abort" and "regex does not compile" in out.stop_reason
    # the same bad grammar is now a cached failure: add_request refuses it at once
    with pytest.raises(ValueError, match="regex does not compile"):
        engine.add_request(None, [1, 2], SamplingParams(max_tokens=4, regex="[z-a]"))
    assert not engine.requests


def test_llm_generate_raises_before_queueing_anything(tiny_llm):
    with pytest.raises(ValueError, match="does not compile"):
        tiny_llm.generate(prompt_token_ids=[[1, 2], [3, 4]], sampling_params=[
            SamplingParams(max_tokens=2), SamplingParams(max_tokens=2, response_format=json_schema({"type": "foo"}))])
    assert not tiny_llm.engine.requests and not tiny_llm.engine.has_unfinished_requests()
