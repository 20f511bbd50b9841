"""server/deltas.py: however the engine chunks a choice's raw text, the assembled deltas are the same."""
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from grammar.reasoning_parser import split_reasoning
from grammar.tool_parser import parse_tool_calls
from server.deltas import ChoiceDeltas, merge_deltas
from specdec.sampling_params import SamplingParams

TEXT = ('<think>plan: call add</think>Sure. <tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n'
        '</tool_call><tool_call>{"name": "get_weather", "arguments": {"city": "Zürich"}}</tool_call>')


def assemble(deltas):
    content = reasoning = ""
    calls = {}
    for d in deltas:
        content += d.get("content", "")
        reasoning += d.get("reasoning_content", "")
        for c in d.get("tool_calls", []):
            call = calls.setdefault(c["index"], {"id": None, "name": "", "arguments": ""})
            if "id" in c:
                assert call["id"] is None
                call["id"] = c["id"]
            call["name"] += c.get("function", {}).get("name", "")
            call["arguments"] += c.get("function", {}).get("arguments", "")
    return content, reasoning, calls


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=30))
def test_any_chunking_assembles_to_the_whole_parse(cuts):
    params = SamplingParams(reasoning_parser="deepseek_r1", tool_call_parser="hermes")
    bounds = sorted(set(cuts) | {0, len(TEXT)})
    pieces = [TEXT[a:b] for a, b in zip(bounds, bounds[1:])]
    parser = ChoiceDeltas(params, "req-0")
    deltas = []
    for i, piece in enumerate(pieces):
        deltas += parser.feed(piece, final=i == len(pieces) - 1)
    content, reasoning, calls = assemble(deltas)
    want_reasoning, answer = split_reasoning(TEXT)
    want_content, want_calls = parse_tool_calls(answer, "hermes", id_prefix="call_req-0_")
    assert reasoning == want_reasoning == "plan: call add"
    assert content == want_content
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        (w["id"], w["function"]["name"], json.loads(w["function"]["arguments"])) for w in want_calls]
    assert [c["name"] for c in calls.values()] == ["add", "get_weather"]


def test_plain_params_pass_text_through():
    parser = ChoiceDeltas(SamplingParams(), "r")
    assert parser.feed("<tool_call>{", final=False) == [{"content": "<tool_call>{"}]
    assert parser.feed("", final=True) == []


def test_merge_joins_fragments_of_one_call_and_not_of_two():
    head = {"tool_calls": [{"index": 0, "id": "c0", "type": "function", "function": {"name": "f", "arguments": ""}}]}
    frag = {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}
    frag2 = {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}
    other = {"tool_calls": [{"index": 1, "id": "c1", "type": "function", "function": {"name": "g", "arguments": ""}}]}
    out = merge_deltas([{"content": "a"}, {"content": "b"}, head, frag, frag2, other, {"content": ""}])
    assert out == [{"content": "ab"},
                   {"tool_calls": [{"index": 0, "id": "c0", "type": "function",
                                    "function": {"name": "f", "arguments": '{"a": 1}'}}]},
                   other]
    assert head["tool_calls"][0]["function"]["arguments"] == ""      # inputs are not mutated
