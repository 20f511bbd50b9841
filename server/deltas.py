"""ChoiceDeltas: one streamed choice's raw text -> OpenAI chat deltas (content, reasoning, tool calls).

The engine's `delta_text` is the raw model text (think block and tool-call
markup included). With the request's reasoning parser, text up to `</think>`
becomes `reasoning_content`; with its tool-call parser, the answer's calls
become `tool_calls` deltas (id and name first, then argument fragments).
Both parsers hold back text that may start a marker, so what a client
assembles equals the non-streamed message however the engine chunks the text.
"""
from __future__ import annotations

from grammar.reasoning_parser import ReasoningStreamParser
from grammar.tool_parser import ToolCallStreamParser
from specdec.sampling_params import SamplingParams


class ChoiceDeltas:
    """Parsers for one choice; `feed` mutates their state."""

    def __init__(self, params: SamplingParams, request_id: str):
        self.reasoning = ReasoningStreamParser(params.reasoning_parser) if params.reasoning_parser else None
        # the same ids as the non-streamed output (specdec/output_processor.py)
        self.tools = (ToolCallStreamParser(params.tool_call_parser, id_prefix=f"call_{request_id}_")
                      if params.tool_call_parser else None)

    def feed(self, text: str, final: bool) -> list[dict]:
        """Deltas for this piece of raw text (`final`: the choice ended, flush what was held back)."""
        parts = self.reasoning.feed(text) if self.reasoning is not None else [{"content": text}]
        if final and self.reasoning is not None:
            parts += self.reasoning.finish()
        out: list[dict] = []
        for d in parts:
            if "content" in d and self.tools is not None:
                out += self.tools.feed(d["content"])
            else:
                out.append(d)
        if final and self.tools is not None:
            out += self.tools.finish()
        return merge_deltas(out)


def merge_deltas(deltas: list[dict]) -> list[dict]:
    """Adjacent deltas of the same kind joined (fewer SSE chunks); empty text dropped. The input
    is not mutated. A call's argument fragments join onto the previous delta of the same call."""
    out: list[dict] = []
    for d in deltas:
        key = next(iter(d))
        prev = out[-1] if out else None
        if key in ("content", "reasoning_content"):
            if not d[key]:
                continue
            if prev is not None and key in prev:
                prev[key] += d[key]
                continue
            out.append({key: d[key]})
            continue
        calls = [_copy_call(c) for c in d["tool_calls"]]
        if prev is not None and "tool_calls" in prev and len(calls) == 1 and set(calls[0]) == {"index", "function"}:
            last = prev["tool_calls"][-1]
            if last["index"] == calls[0]["index"] and set(calls[0]["function"]) == {"arguments"}:
                fn = last["function"]
                fn["arguments"] = fn.get("arguments", "") + calls[0]["function"]["arguments"]
                continue
        out.append({"tool_calls": calls})
    return out


def _copy_call(call: dict) -> dict:
    c = dict(call)
    if "function" in c:
        c["function"] = dict(c["function"])
    return c
