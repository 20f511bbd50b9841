"""Streaming reasoning / tool-call parsers: the same result for every chunking of the same text.

Speculation emits several tokens per step, so a server sees arbitrary chunk boundaries:
inside `<tool_call>`, `</think>`, JSON strings and (as raw bytes) multi-byte characters.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grammar.reasoning_parser import ReasoningStreamParser, split_reasoning
from grammar.tool_parser import ToolCallStreamParser, parse_tool_calls

WORDS = ["Sure", " ", "héllo", "日本語", "🙂", "<", "tool", "</", "think", ">", "\n", "{", "}", '"', "x;y"]
ARG_VALUES = st.one_of(st.integers(-5, 500), st.text(alphabet="ab é日🙂\"\\}{<>", max_size=6),
                       st.lists(st.integers(0, 9), max_size=3))


@st.composite
def tool_call(draw, fmt: str) -> str:
    name = draw(st.sampled_from(["get_weather", "f", "search.web"]))
    args = draw(st.dictionaries(st.sampled_from(["city", "n", "q"]), ARG_VALUES, max_size=3))
    key = "arguments" if fmt == "hermes" else "parameters"
    body = f'{{"name": "{name}", "{key}": {json.dumps(args, ensure_ascii=draw(st.booleans()))}}}'
    return f"<tool_call>\n{body}\n</tool_call>" if fmt == "hermes" else body


@st.composite
def hermes_text(draw) -> str:
    parts = draw(st.lists(st.one_of(st.sampled_from(WORDS), tool_call("hermes")), max_size=8))
    return "".join(parts)


@st.composite
def llama3_text(draw) -> str:
    if draw(st.booleans()):
        calls = draw(st.lists(tool_call("llama3"), min_size=1, max_size=3))
        return draw(st.sampled_from(["", " ", "<|python_tag|>"])) + "; ".join(calls)
    return "".join(draw(st.lists(st.sampled_from(WORDS), max_size=6)))


@st.composite
def reasoning_text(draw) -> str:
    start = draw(st.sampled_from(["", "<think>", " <think>\n"]))
    inner = "".join(draw(st.lists(st.sampled_from(WORDS), max_size=6)))
    end = draw(st.sampled_from(["</think>", "</think>\n\n", ""]))
    answer = "".join(draw(st.lists(st.sampled_from(WORDS + ["</think>"]), max_size=4))) if end else ""
    return start + inner + end + answer


def chunks_of(data, cuts: list[int]):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def feed_all(parser, pieces) -> list[dict]:
    deltas = []
    for p in pieces:
        deltas += parser.feed(p)
    return deltas + parser.finish()


def replay_tool_deltas(deltas: list[dict]) -> tuple[str, list[dict]]:
    """Rebuild (content, calls) from OpenAI deltas, as a client library does."""
    content, calls = "", {}
    for d in deltas:
        content += d.get("content", "")
        for tc in d.get("tool_calls", []):
            c = calls.setdefault(tc["index"], {"id": None, "type": "function", "function": {"name": None, "arguments": ""}})
            if "id" in tc:
                c["id"], c["function"]["name"] = tc["id"], tc["function"]["name"]
            c["function"]["arguments"] += tc["function"].get("arguments", "")
    return content, [calls[i] for i in sorted(calls)]


@settings(max_examples=300, deadline=None)
@given(text=hermes_text(), cuts=st.lists(st.integers(0, 10_000), max_size=12), as_bytes=st.booleans())
def test_hermes_tool_parser_is_chunking_invariant(text, cuts, as_bytes):
    whole = parse_tool_calls(text, "hermes", id_prefix="call_")
    data = text.encode() if as_bytes else text
    parser = ToolCallStreamParser("hermes", id_prefix="call_")
    deltas = feed_all(parser, chunks_of(data, cuts))
    assert (parser.content, parser.tool_calls) == whole
    assert replay_tool_deltas(deltas) == whole
    for call in whole[1]:                     # every complete call's arguments are the model's JSON
        json.loads(call["function"]["arguments"])


@settings(max_examples=200, deadline=None)
@given(text=llama3_text(), cuts=st.lists(st.integers(0, 10_000), max_size=10), as_bytes=st.booleans())
def test_llama3_tool_parser_is_chunking_invariant(text, cuts, as_bytes):
    whole = parse_tool_calls(text, "llama3", id_prefix="call_")
    parser = ToolCallStreamParser("llama3", id_prefix="call_")
    deltas = feed_all(parser, chunks_of(text.encode() if as_bytes else text, cuts))
    assert (parser.content, parser.tool_calls) == whole == replay_tool_deltas(deltas)


@settings(max_examples=300, deadline=None)
@given(text=reasoning_text(), cuts=st.lists(st.integers(0, 10_000), max_size=12), as_bytes=st.booleans())
def test_reasoning_parser_is_chunking_invariant(text, cuts, as_bytes):
    whole = split_reasoning(text)
    parser = ReasoningStreamParser()
    deltas = feed_all(parser, chunks_of(text.encode() if as_bytes else text, cuts))
    assert (parser.reasoning_content, parser.content) == whole
    assert ("".join(d.get("reasoning_content", "") for d in deltas),
            "".join(d.get("content", "") for d in deltas)) == whole
    if "</think>" in text:
        head, _, tail = text.partition("</think>")
        opened = head.lstrip().startswith("<think>")
        assert whole == (head.lstrip()[len("<think>"):] if opened else head, tail)


def test_hermes_parser_known_answer():
    text = 'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>'
    content, calls = parse_tool_calls(text, id_prefix="call_")
    assert content == "Let me check. "
    assert calls == [{"id": "call_0", "type": "function",
                      "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}}]
    # keys in the other order still parse (not streamed, sent whole at the end)
    _, calls = parse_tool_calls('<tool_call>{"arguments": {"a": 1}, "name": "f"}</tool_call>', id_prefix="c")
    assert calls[0]["function"] == {"name": "f", "arguments": '{"a": 1}'}
    # not JSON: stays content
    assert parse_tool_calls("<tool_call>{oops}</tool_call>") == ("<tool_call>{oops}</tool_call>", [])


def test_streamed_deltas_name_first_then_argument_fragments():
    p = ToolCallStreamParser("hermes", id_prefix="c")
    d = p.feed('<tool_call>{"name": "f", "arguments": {"q": "ab')
    assert d[0] == {"tool_calls": [{"index": 0, "id": "c0", "type": "function",
                                    "function": {"name": "f", "arguments": ""}}]}
    assert d[1] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"q": "ab'}}]}
    assert p.feed('c"}}</tool') == [{"tool_calls": [{"index": 0, "function": {"arguments": 'c"}'}}]}]
    assert p.feed("_call> done") == [{"content": " done"}]


def test_reasoning_parser_known_answers():
    assert split_reasoning("<think>plan</think>\n\n{}") == ("plan", "\n\n{}")
    assert split_reasoning("plan</think>{}") == ("plan", "{}")       # template opened <think>
    assert split_reasoning("still thinking") == ("still thinking", "")
    with pytest.raises(ValueError, match="reasoning_parser"):
        ReasoningStreamParser("o1")
