"""JSON-schema output, tool calls and reasoning through the server, with the official `openai` client
on the real bundled model (fp32, n-gram speculation, grammar-aware drafting)."""
import json

import httpx
import jsonschema
import openai
import pytest

from server import ServerSettings, build_app
from specdec import LLM
from tests.server_harness import ThreadServer

MODEL = "SmolLM2-135M-Instruct"
ENGINE_ARGS = dict(dtype="float32", speculative_config={"method": "ngram", "num_speculative_tokens": 4, "adaptive": False},
                   kv_cache_memory=64 * 2**20)
CITY = {"type": "object",
        "properties": {"city": {"type": "string", "maxLength": 16}, "population": {"type": "integer"}},
        "required": ["city", "population"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
       "required": ["a", "b"], "additionalProperties": False}
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}},
           "required": ["city"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": ADD}}]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}


@pytest.fixture(scope="module")
def server():
    app = build_app(LLM(**ENGINE_ARGS), ServerSettings(max_tokens_limit=128))
    with ThreadServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.openai_client()


def chat(client, content, **kw):
    args = dict(model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=40, temperature=0)
    args.update(kw)
    return client.chat.completions.create(**args)


def city_format(schema=CITY):
    return {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}


def assemble_stream(chunks):
    """(content, reasoning, tool calls by index, finish reasons) from streamed chunks, as a client would."""
    content, reasoning, calls, finishes = "", "", {}, []
    for ch in chunks:
        if not ch.choices:
            continue
        c = ch.choices[0]
        content += c.delta.content or ""
        reasoning += (c.delta.model_extra or {}).get("reasoning_content") or ""
        for d in c.delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            if d.id:
                assert call["id"] is None, "a call's id is sent once"
                call["id"] = d.id
            if d.function and d.function.name:
                assert not call["name"], "a call's name is sent once"
                call["name"] = d.function.name
            if d.function and d.function.arguments:
                assert call["name"], "arguments come after the name"
                call["arguments"] += d.function.arguments
        if c.finish_reason:
            finishes.append(c.finish_reason)
    return content, reasoning, calls, finishes


def test_json_schema_output_validates_streamed_and_not(client, server):
    prompt = "Give the largest city of Japan and its population as JSON."
    r = chat(client, prompt, response_format=city_format())
    c = r.choices[0]
    assert c.finish_reason == "stop", c.message.content
    jsonschema.validate(json.loads(c.message.content), CITY)
    content, _, calls, finishes = assemble_stream(chat(client, prompt, response_format=city_format(), stream=True))
    assert finishes == ["stop"] and not calls
    assert content == c.message.content            # greedy: streamed == whole
    jsonschema.validate(json.loads(content), CITY)
    # grammar-aware drafting put forced structure (`{"city": "`, `", "population": `) in as drafts
    metrics = httpx.get(f"{server.url}/metrics").text
    forced = [line for line in metrics.splitlines()
              if line.startswith("specdec:spec_decode_num_grammar_forced_tokens_total")]
    assert forced and float(forced[0].split()[-1]) > 0


def test_json_object_is_json(client):
    r = chat(client, "Describe a cat as a JSON object.", response_format={"type": "json_object"}, max_tokens=60)
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:   # cut by max_tokens: still a JSON object's prefix, never free text
        assert r.choices[0].message.content.startswith("{")


def test_named_tool_call_non_streamed_and_streamed(client):
    choice = {"type": "function", "function": {"name": "add"}}
    r = chat(client, "What is 2 plus 3?", tools=TOOLS, tool_choice=choice)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "add"
    jsonschema.validate(json.loads(call.function.arguments), ADD)
    assert not c.message.content
    content, _, calls, finishes = assemble_stream(
        chat(client, "What is 2 plus 3?", tools=TOOLS, tool_choice=choice, stream=True))
    assert finishes == ["tool_calls"] and not content
    assert list(calls) == [0]
    assert calls[0]["name"] == "add" and calls[0]["id"].startswith("call_")
    assert calls[0]["arguments"] == call.function.arguments     # greedy: same call, assembled from fragments


def test_required_tool_call_streams_as_deltas(client):
    kw = dict(tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    chunks = list(chat(client, "What is the weather in Paris?", stream=True, **kw))
    content, _, calls, finishes = assemble_stream(chunks)
    assert finishes == ["tool_calls"] and list(calls) == [0], (content, calls)
    name = calls[0]["name"]
    assert name in SCHEMAS
    jsonschema.validate(json.loads(calls[0]["arguments"]), SCHEMAS[name])
    # the deltas came in pieces: a header with id + name, then argument text
    tool_chunks = [ch for ch in chunks if ch.choices and ch.choices[0].delta.tool_calls]
    assert tool_chunks[0].choices[0].delta.tool_calls[0].function.name == name
    r = chat(client, "What is the weather in Paris?", **kw).choices[0]
    assert r.finish_reason == "tool_calls"
    assert [(t.function.name, t.function.arguments) for t in r.message.tool_calls] == [(name, calls[0]["arguments"])]


def test_tool_choice_none_and_reasoning_field(client):
    """tool_choice none: plain text, no calls. A per-request reasoning parser on a model that never closes
    </think>: everything is reasoning_content, streamed and not, and it is the plain answer's text."""
    plain = chat(client, "Name three colors.", max_tokens=12).choices[0].message.content
    r = chat(client, "Name three colors.", max_tokens=12, extra_body={"reasoning_parser": "deepseek_r1"})
    msg = r.choices[0].message
    assert msg.model_extra["reasoning_content"] == plain and not msg.content
    content, reasoning, _, _ = assemble_stream(chat(client, "Name three colors.", max_tokens=12, stream=True,
                                                    extra_body={"reasoning_parser": "deepseek_r1"}))
    assert reasoning == plain and content == ""
    r = chat(client, "Name three colors.", max_tokens=12, tools=TOOLS, tool_choice="none").choices[0]
    assert r.finish_reason in ("stop", "length") and r.message.content and not r.message.tool_calls


@pytest.mark.parametrize("kw, param", [
    (dict(response_format=city_format({"type": "nonsense"})), "response_format"),
    (dict(response_format=city_format({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}})),
     "response_format"),
    (dict(response_format={"type": "json_schema"}), "response_format"),
    (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "no_such_tool"}}), "tool_choice"),
    (dict(tools=[TOOLS[0], TOOLS[0]]), "tools"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}],
          tool_choice="required"), "tools"),
    (dict(tool_choice="required"), "tool_choice"),
    (dict(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"}), "response_format"),
])
def test_bad_structure_is_400_before_streaming(client, server, kw, param):
    for stream in (False, True):       # errors come before any SSE header, so streams raise too
        with pytest.raises(openai.BadRequestError) as e:
            r = chat(client, "hi", stream=stream, **kw)
            list(r) if stream else None
        assert e.value.status_code == 400
        assert e.value.body["param"] == param and e.value.body["message"], e.value.body
    assert server.wait_idle()["kv_blocks_in_use"] == 0


def test_completions_take_a_schema(client):
    r = client.completions.create(model=MODEL, prompt="A city and its population in JSON:", max_tokens=40,
                                  temperature=0, extra_body={"response_format": city_format()})
    c = r.choices[0]
    assert c.finish_reason == "stop", c.text
    jsonschema.validate(json.loads(c.text), CITY)
