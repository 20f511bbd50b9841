"""Tool-call parser: model text -> OpenAI tool calls and content, streamed or whole.

Formats (`tool_call_parser`):
  hermes  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, any number,
          text around them is content (Qwen, Hermes, SmolLM-style templates)
  llama3  the reply itself is `{"name": ..., "parameters": {...}}` (optionally after
          `<|python_tag|>`; several joined by `;`); anything else is content

Streaming emits OpenAI chat-completion deltas: `{"content": str}` and
`{"tool_calls": [{"index", "id", "type": "function", "function": {"name", "arguments": ""}}]}`
once a call's name is known, then `{"tool_calls": [{"index", "function": {"arguments": fragment}}]}`
as the arguments arrive. `arguments` is the model's own JSON text of the
arguments object. Text that might begin a marker is held back until decided,
and every decision depends only on the text, never on where chunks end, so the
final result is the same for every chunking (tests/test_grammar_parsers.py):

    parser = ToolCallStreamParser("hermes")
    deltas = parser.feed(chunk) ...; deltas += parser.finish()
    parser.content, parser.tool_calls        # the final result
"""
from __future__ import annotations

import codecs
import json
import re
import uuid

FORMATS = ("hermes", "llama3")
CALL_START, CALL_END = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
# `{"name": "<name>", "arguments": ` up to the first character of the arguments value
_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*(?=\S)')


def parse_tool_calls(text: str, fmt: str = "hermes", id_prefix: str | None = None) -> tuple[str, list[dict]]:
    """(content, tool_calls) of a whole output; the non-streaming form."""
    p = ToolCallStreamParser(fmt, id_prefix)
    p.feed(text)
    p.finish()
    return p.content, p.tool_calls


class _Call:
    """A call being read: its JSON object text and a brace scanner over it."""
    __slots__ = ("body", "depth", "in_string", "escape", "closed_at", "header_end",
                 "args_start", "args_end", "num_args_emitted", "index")

    def __init__(self, index: int):
        self.index = index
        self.body = ""
        self.depth = 0
        self.in_string = self.escape = False
        self.closed_at = -1          # body offset just past the object's closing brace
        self.header_end = -1         # set once name is known (args_start: arguments' first char)
        self.args_start = self.args_end = -1
        self.num_args_emitted = 0

    def scan(self, text: str) -> str:
        """Append text up to the end of the object; returns what is left after it."""
        for i, ch in enumerate(text):
            self.body += ch
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
                continue
            if ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    self.closed_at = len(self.body)
                    return text[i + 1:]
        return ""


class ToolCallStreamParser:
    """Parses one output's text into content and tool calls. Mutates its own state on feed()."""

    def __init__(self, fmt: str = "hermes", id_prefix: str | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"tool_call_parser must be one of {FORMATS}, got {fmt!r}")
        self.fmt = fmt
        self.id_prefix = id_prefix if id_prefix is not None else f"call_{uuid.uuid4().hex[:16]}_"
        self.content = ""
        self.tool_calls: list[dict] = []
        self._pending = ""           # fed text not yet consumed
        self._call: _Call | None = None
        self._after_call = False     # llama3: a call ended; only `;` + another call may follow
        self._seen_text = False      # llama3: calls only where the reply starts
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    # ---- public --------------------------------------------------------------------------
    def feed(self, delta: str | bytes) -> list[dict]:
        """Consume a text delta (str, or UTF-8 bytes decoded incrementally). Returns deltas."""
        if isinstance(delta, bytes):
            delta = self._utf8.decode(delta)
        self._pending += delta
        out: list[dict] = []
        self._drain(out, final=False)
        return out

    def finish(self) -> list[dict]:
        """End of text: an unfinished call keeps what it has; held-back text becomes content."""
        self._pending += self._utf8.decode(b"", final=True)
        out: list[dict] = []
        self._drain(out, final=True)
        if self._call is not None:
            call = self._call
            if call.header_end >= 0:
                self._emit_args(out, call, final=True)
            else:
                self._emit_content(out, self._call_prefix() + call.body)
            self._call = None
        if self._pending:
            self._emit_content(out, self._pending)
            self._pending = ""
        return out

    # ---- the state machine ---------------------------------------------------------------------
    def _call_prefix(self) -> str:
        return CALL_START if self.fmt == "hermes" else ""

    def _drain(self, out: list[dict], final: bool) -> None:
        while self._pending or self._call is not None:
            if self._call is not None:
                if not self._step_call(out, final):
                    return
            elif not self._step_text(out, final):
                return

    def _step_text(self, out: list[dict], final: bool) -> bool:
        """Outside a call: emit content up to where a call may begin. True = progress made."""
        text = self._pending
        if self.fmt == "hermes":
            idx = text.find(CALL_START)
            if idx >= 0:
                self._emit_content(out, text[:idx])
                self._pending = text[idx + len(CALL_START):]
                self._call = _Call(len(self.tool_calls))
                return True
            keep = 0 if final else _partial_suffix(text, CALL_START)
            self._emit_content(out, text[:len(text) - keep])
            self._pending = text[len(text) - keep:]
            return False
        # llama3: a call is the reply itself (or follows `;` after a call)
        if self._seen_text:
            self._emit_content(out, text)
            self._pending = ""
            return False
        stripped = text.lstrip()
        if self._after_call:
            if not stripped:
                return False if not final else self._give_up_calls(out)
            if stripped[0] != ";":
                return self._give_up_calls(out)
            stripped = stripped[1:].lstrip()
            if not stripped and not final:
                return False
        if stripped.startswith(PYTHON_TAG):
            stripped = stripped[len(PYTHON_TAG):].lstrip()
        elif PYTHON_TAG.startswith(stripped) and stripped and not final:
            return False
        if stripped.startswith("{"):
            self._pending = stripped
            self._call = _Call(len(self.tool_calls))
            self._after_call = False
            return True
        if not stripped and not final:
            return False
        return self._give_up_calls(out)

    def _give_up_calls(self, out: list[dict]) -> bool:
        self._seen_text = True
        self._emit_content(out, self._pending)
        self._pending = ""
        return False

    def _step_call(self, out: list[dict], final: bool) -> bool:
        call = self._call
        if call.closed_at < 0:
            self._pending = call.scan(self._pending)
            if call.header_end < 0:
                m = _HEADER.match(call.body)
                if m:
                    self._start_call(out, call, json.loads(f'"{m.group(1)}"'), m.end())
            if call.header_end >= 0:
                self._emit_args(out, call, final=False)
            if call.closed_at < 0:
                return False
        # the object is complete
        if self.fmt == "hermes":
            rest = self._pending.lstrip()
            if CALL_END.startswith(rest) and len(rest) < len(CALL_END) and not final:
                return False                        # the end marker may still be arriving
            if rest.startswith(CALL_END):
                self._pending = rest[len(CALL_END):]
        else:
            self._after_call = True
        self._finish_call(out, call)
        self._call = None
        return True

    def _start_call(self, out: list[dict], call: _Call, name: str, header_end: int) -> None:
        call.header_end = header_end
        if call.body[header_end] == "{":
            call.args_start = header_end
        entry = {"id": f"{self.id_prefix}{call.index}", "type": "function",
                 "function": {"name": name, "arguments": ""}}
        self.tool_calls.append(entry)
        out.append({"tool_calls": [{"index": call.index, **json.loads(json.dumps(entry))}]})

    def _emit_args(self, out: list[dict], call: _Call, final: bool) -> None:
        """Stream the arguments object's text as far as it is known."""
        if call.args_start < 0:
            return                                  # non-object arguments: sent whole at the end
        if call.args_end < 0:
            # while the arguments object is open everything read belongs to it
            call.args_end = _object_end(call.body, call.args_start)
        end = call.args_end if call.args_end >= 0 else len(call.body)
        frag = call.body[call.args_start + call.num_args_emitted:end]
        if frag:
            call.num_args_emitted += len(frag)
            self.tool_calls[call.index]["function"]["arguments"] += frag
            out.append({"tool_calls": [{"index": call.index, "function": {"arguments": frag}}]})

    def _finish_call(self, out: list[dict], call: _Call) -> None:
        if call.header_end >= 0:
            if call.args_start >= 0:
                self._emit_args(out, call, final=True)
                return
            try:                                     # e.g. "arguments": "..." or null
                value = json.loads(call.body)
                args = value.get("arguments", value.get("parameters"))
                frag = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            except (json.JSONDecodeError, AttributeError):
                frag = call.body[call.header_end:].rstrip().rstrip("}").rstrip()
            self.tool_calls[call.index]["function"]["arguments"] += frag
            out.append({"tool_calls": [{"index": call.index, "function": {"arguments": frag}}]})
            return
        try:                                         # keys in another order: parse the whole object
            value = json.loads(call.body)
            name = value["name"]
            args = value.get("arguments", value.get("parameters", {}))
            assert isinstance(name, str)
        except (json.JSONDecodeError, KeyError, TypeError, AssertionError):
            self._emit_content(out, self._call_prefix() + call.body
                               + (CALL_END if self.fmt == "hermes" else ""))
            return
        call.header_end = len(call.body)
        self._start_call(out, call, name, len(call.body) - 1)
        frag = json.dumps(args, ensure_ascii=False)
        self.tool_calls[call.index]["function"]["arguments"] = frag
        out.append({"tool_calls": [{"index": call.index, "function": {"arguments": frag}}]})

    def _emit_content(self, out: list[dict], text: str) -> None:
        if text:
            self.content += text
            out.append({"content": text})


def _object_end(text: str, start: int) -> int:
    """Offset just past the JSON object/array opening at text[start], or -1 if not closed yet."""
    depth, in_string, escape = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def _partial_suffix(text: str, marker: str) -> int:
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0
