"""LLM.chat with tools on the bundled model: forced calls, the OpenAI output shape, bad input."""
from __future__ import annotations

import json

import jsonschema
import pytest

from specdec import SamplingParams

ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": ADD}},
]
MSGS = [{"role": "user", "content": "What is 2 plus 3?"}]
GREEDY = SamplingParams(temperature=0.0, max_tokens=40)


def test_named_tool_choice_forces_that_call(llm_fp32):
    (out,) = llm_fp32.chat(MSGS, GREEDY, tools=TOOLS,
                           tool_choice={"type": "function", "function": {"name": "add"}})
    o = out.outputs[0]
    assert o.finish_reason == "tool_calls" and len(o.tool_calls) == 1
    call = o.tool_calls[0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "add"
    jsonschema.validate(json.loads(call["function"]["arguments"]), ADD)


def test_required_forces_some_call_to_a_known_tool(llm_fp32):
    (out,) = llm_fp32.chat([{"role": "user", "content": "Weather in Paris?"}], GREEDY, tools=TOOLS,
                           tool_choice="required", parallel_tool_calls=False)
    calls = out.outputs[0].tool_calls
    assert calls and calls[0]["function"]["name"] in {"get_weather", "add"}
    json.loads(calls[0]["function"]["arguments"])


def test_tools_are_rendered_into_the_prompt_when_the_template_ignores_them(llm_fp32):
    from grammar.tools import render_with_tools
    text = render_with_tools(llm_fp32.tokenizer, MSGS, TOOLS, True)
    assert "<tools>" in text and '"name": "get_weather"' in text and "<tool_call>" in text


@pytest.mark.parametrize("tools, choice, message", [
    (TOOLS, {"type": "function", "function": {"name": "nope"}}, "not in tools"),
    (TOOLS, "sometimes", "tool_choice must be"),
    ([{"type": "function"}], "auto", r"tools\[0\]"),
    ([{"type": "function", "function": {"name": ""}}], "auto", "name must be"),
    ([TOOLS[0], TOOLS[0]], "auto", "used twice"),
    ([{"type": "function", "function": {"name": "f", "parameters": "x"}}], "auto", "parameters"),
    ([], "auto", "non-empty list"),
])
def test_bad_tools_are_value_errors(llm_fp32, tools, choice, message):
    with pytest.raises(ValueError, match=message):
        llm_fp32.chat(MSGS, GREEDY, tools=tools, tool_choice=choice)
    assert not llm_fp32.engine.requests


def test_tools_plus_another_grammar_is_a_value_error(llm_fp32):
    with pytest.raises(ValueError, match="cannot be combined"):
        llm_fp32.chat(MSGS, SamplingParams(max_tokens=4, regex="a+"), tools=TOOLS, tool_choice="required")


def test_completion_output_gets_reasoning_and_tool_calls():
    from types import SimpleNamespace

    from specdec.output_processor import parse_structure
    req = SimpleNamespace(request_id="r1", params=SamplingParams(reasoning_parser="qwen3", tool_call_parser="hermes"))
    raw = 'plan it</think>\n\nOK <tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    text, reasoning, calls = parse_structure(req, raw, finished=True)
    assert (text, reasoning) == ("\n\nOK ", "plan it")
    assert calls == [{"id": "call_r1_0", "type": "function",
                      "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]
    # while running, tool calls are not parsed yet (the stream parsers do that for streaming clients)
    assert parse_structure(req, raw, finished=False)[2] is None


def test_cli_regex_and_bad_json_schema_file(tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    run = lambda *a: subprocess.run([sys.executable, "-m", "specdec.cli", "generate", *a], cwd=root,
                                    capture_output=True, text=True, timeout=300)
    proc = run("Pick a year", "--regex", "(19|20)[0-9]{2}", "--max-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"(19|20)[0-9]{2}", proc.stdout.strip()), proc.stdout
    bad = tmp_path / "schema.json"
    bad.write_text('{"type": "foo"}')
    proc = run("Hi", "--json-schema", str(bad))
    assert proc.returncode == 2 and "does not compile" in proc.stderr and "Traceback" not in proc.stderr
