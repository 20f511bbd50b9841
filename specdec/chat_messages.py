"""Chat messages in OpenAI's shapes, checked and normalised before the chat template.

Accepted per message (anything else is a ValueError naming the message and field):
  role      "system" | "developer" (treated as system) | "user" | "assistant" | "tool"
  content   None, a string, or a list of {"type": "text", "text": str} parts (joined);
            None / missing only for an assistant message with tool_calls
  name      optional string
  assistant tool_calls: [{"id": str, "type": "function",
                          "function": {"name": str, "arguments": JSON object as a string or dict}}]
  tool      tool_call_id: str (required)

The template then receives plain dicts with string content (HF's convention:
tool-call arguments as a dict), so no template or jinja error from a malformed
message reaches the caller. A template that knows nothing of tool calls gets them
written into the assistant's content as Hermes `<tool_call>` blocks, so they are
not silently dropped.
"""
from __future__ import annotations

import json
from typing import Any

from specdec.validation import check_text

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_MESSAGES = 4096


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """One conversation -> a list of template-ready message dicts. Raises ValueError."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of message objects")
    if len(messages) > MAX_MESSAGES:
        raise ValueError(f"messages must have at most {MAX_MESSAGES} entries, got {len(messages)}")
    return [_normalize_one(i, m) for i, m in enumerate(messages)]


def render_tool_calls_as_text(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For templates without tool-call support: fold tool_calls into the assistant content."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = "\n".join("<tool_call>\n" + json.dumps({"name": c["function"]["name"],
                                                            "arguments": c["function"]["arguments"]})
                              + "\n</tool_call>" for c in m["tool_calls"])
            m = {k: v for k, v in m.items() if k != "tool_calls"}
            m["content"] = (m["content"] + "\n" if m["content"] else "") + calls
        out.append(m)
    return out


def _normalize_one(i: int, m: Any) -> dict[str, Any]:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise ValueError(f"{where} must be an object with 'role' and 'content', got {type(m).__name__}")
    role = m.get("role")
    if role not in ROLES:
        raise ValueError(f"{where}.role must be one of {list(ROLES)}, got {_brief(role)}")
    role = "system" if role == "developer" else role
    out: dict[str, Any] = {"role": role}
    tool_calls = m.get("tool_calls")
    if tool_calls is not None:
        if role != "assistant":
            raise ValueError(f"{where}.tool_calls is only allowed on assistant messages")
        out["tool_calls"] = _tool_calls(where, tool_calls)
    content = m.get("content")
    if content is None and not out.get("tool_calls"):
        raise ValueError(f"{where}.content is required (a string or a list of text parts)"
                         + (" unless the assistant message has tool_calls" if role == "assistant" else ""))
    out["content"] = _content(where, content)
    if m.get("name") is not None:
        out["name"] = check_text(f"{where}.name", m["name"], 256, allow_empty=False)
    if role == "tool":
        if m.get("tool_call_id") is None:
            raise ValueError(f"{where}.tool_call_id is required on tool messages")
        out["tool_call_id"] = check_text(f"{where}.tool_call_id", m["tool_call_id"], 256, allow_empty=False)
    return out


def _content(where: str, content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return check_text(f"{where}.content", content)
    if not isinstance(content, (list, tuple)):
        raise ValueError(f"{where}.content must be a string, a list of text parts or null, "
                         f"got {type(content).__name__}")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ValueError(f"{where}.content[{j}] must be {{'type': 'text', 'text': ...}}; "
                             f"got {_brief(kind)} (only text parts are supported)")
        texts.append(check_text(f"{where}.content[{j}].text", part.get("text")))
    return "".join(texts)


def _tool_calls(where: str, calls: Any) -> list[dict[str, Any]]:
    if not isinstance(calls, (list, tuple)):
        raise ValueError(f"{where}.tool_calls must be a list, got {type(calls).__name__}")
    out = []
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise ValueError(f"{at} must be {{'id': ..., 'type': 'function', 'function': {{'name', 'arguments'}}}}")
        if call.get("type", "function") != "function":
            raise ValueError(f"{at}.type must be 'function', got {_brief(call.get('type'))}")
        fn = call["function"]
        name = check_text(f"{at}.function.name", fn.get("name"), 256, allow_empty=False)
        args = fn.get("arguments", "{}")
        if isinstance(args, str):
            check_text(f"{at}.function.arguments", args)
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as e:
                raise ValueError(f"{at}.function.arguments is not valid JSON: {e}") from None
        if not isinstance(args, dict):
            raise ValueError(f"{at}.function.arguments must be a JSON object, got {type(args).__name__}")
        try:
            json.dumps(args, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{at}.function.arguments is not JSON-serialisable: {e}") from None
        call_id = call.get("id")
        entry: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": args}}
        if call_id is not None:
            entry["id"] = check_text(f"{at}.id", call_id, 256, allow_empty=False)
        out.append(entry)
    return out


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

