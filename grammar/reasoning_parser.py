"""Reasoning parser: `<think>...</think>` text -> reasoning_content, the rest -> content.

DeepSeek-R1 / Qwen3 style. The output begins inside the reasoning block: the
start tag is optional because chat templates often open it in the prompt; the
first `</think>` ends it. Text with no end marker is all reasoning (the answer
never started). This matches the grammar prefix in grammar/compiler.py, so the
answer the grammar constrains is exactly the parser's `content`.

Streaming: `feed()` takes text deltas (or raw UTF-8 bytes, decoded
incrementally) and returns `{"reasoning_content": ...}` / `{"content": ...}`
deltas; text that might be the start of a marker is held back until it is
decided, so the result is the same however the text is chunked:

    parser = ReasoningStreamParser()
    deltas = parser.feed(chunk) ...; deltas += parser.finish()
    parser.reasoning_content, parser.content   # the final split
"""
from __future__ import annotations

import codecs

THINK_START, THINK_END = "<think>", "</think>"
PARSERS = ("deepseek_r1", "qwen3")


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning_content, content) of a whole output; the non-streaming form."""
    p = ReasoningStreamParser()
    p.feed(text)
    p.finish()
    return p.reasoning_content, p.content


class ReasoningStreamParser:
    """Splits streamed text at the reasoning end marker. Mutates its own state on feed()."""

    def __init__(self, name: str = "deepseek_r1"):
        if name not in PARSERS:
            raise ValueError(f"reasoning_parser must be one of {PARSERS}, got {name!r}")
        self.name = name
        self.reasoning_content = ""
        self.content = ""
        self._pending = ""            # undecided text (a possible marker prefix)
        self._at_start = True         # a leading <think> may still come
        self._in_reasoning = True
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, delta: str | bytes) -> list[dict]:
        """Consume a text delta. Returns OpenAI-style deltas (possibly empty)."""
        if isinstance(delta, bytes):
            delta = self._utf8.decode(delta)
        self._pending += delta
        return self._drain(final=False)

    def finish(self) -> list[dict]:
        """End of text: flush anything held back."""
        self._pending += self._utf8.decode(b"", final=True)
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[dict]:
        out: list[dict] = []
        if self._at_start:
            stripped = self._pending.lstrip()
            if stripped.startswith(THINK_START):
                self._pending = stripped[len(THINK_START):]
                self._at_start = False
            elif final or not THINK_START.startswith(stripped):
                self._at_start = False
            else:
                return out                       # only whitespace / a partial "<think" so far
        if self._in_reasoning:
            idx = self._pending.find(THINK_END)
            if idx >= 0:
                self._emit(out, "reasoning_content", self._pending[:idx])
                self._pending = self._pending[idx + len(THINK_END):]
                self._in_reasoning = False
            else:
                keep = 0 if final else _partial_suffix(self._pending, THINK_END)
                self._emit(out, "reasoning_content", self._pending[:len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep:]
                return out
        self._emit(out, "content", self._pending)
        self._pending = ""
        return out

    def _emit(self, out: list[dict], field: str, text: str) -> None:
        if not text:
            return
        setattr(self, field, getattr(self, field) + text)
        out.append({field: text})


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0
