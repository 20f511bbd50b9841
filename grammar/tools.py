"""Tools for chat: validation, rendering into the prompt, and the grammar that forces calls.

`tool_choice` (OpenAI): "none" (tools shown, no calls parsed or forced), "auto"
(free text until `<tool_call>`, then one of the tools' argument schemas:
xgrammar structural tags), "required" (at least one call, forced by the
grammar), or {"type": "function", "function": {"name": ...}} (that call, forced).
The call format follows the model: its chat template's own tool syntax when it
has one, else a default Hermes-style system block (`<tool_call>{...}</tool_call>`).
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import xgrammar as xgr

# xgrammar's registered structural-tag formats for our parsers' formats
STRUCTURAL_TAG_MODEL = {"hermes": "qwen_3", "llama3": "llama"}

DEFAULT_TOOL_PROMPT = (
    "You are a function calling AI model. You may call one or more functions to assist with the "
    "user query. Here are the available tools:\n<tools>\n{tools}\n</tools>\n"
    "For each function call, return a JSON object with the function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def validate_tools(tools: Any) -> list[dict]:
    """OpenAI `tools` -> a list of {"type": "function", "function": {...}}. Raises ValueError."""
    if not isinstance(tools, list) or not tools:
        raise ValueError("tools must be a non-empty list of {'type': 'function', 'function': {...}}")
    names = set()
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
            raise ValueError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}}")
        name = fn.get("name")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ValueError(f"tools[{i}].function.name must be a non-empty string of at most 64 characters")
        if name in names:
            raise ValueError(f"tools[{i}].function.name {name!r} is used twice")
        names.add(name)
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"tools[{i}].function.parameters must be a JSON schema object")
    return tools


def validate_tool_choice(tool_choice: Any, tools: list[dict]) -> str | dict:
    if tool_choice in ("none", "auto", "required"):
        return tool_choice
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        known = [t["function"]["name"] for t in tools]
        if name not in known:
            raise ValueError(f"tool_choice names function {name!r}, which is not in tools {known}")
        return tool_choice
    raise ValueError("tool_choice must be 'none', 'auto', 'required' or "
                     "{'type': 'function', 'function': {'name': ...}}")


def parser_for_template(chat_template: str | None) -> str:
    """The tool-call format a chat template speaks (Hermes unless it is Llama-3's)."""
    t = chat_template or ""
    if "<tool_call>" in t:
        return "hermes"
    if "<|python_tag|>" in t or "ipython" in t:
        return "llama3"
    return "hermes"


def tool_structural_tag(tools: list[dict], tool_choice: str | dict, parallel_tool_calls: bool,
                        fmt: str) -> dict | None:
    """The structural tag (JSON dict for SamplingParams.structural_tag) that constrains calls,
    or None for tool_choice "none". Raises ValueError for schemas xgrammar rejects up front."""
    if tool_choice == "none":
        return None
    try:
        tag = xgr.get_model_structural_tag(STRUCTURAL_TAG_MODEL[fmt], tools=tools, tool_choice=tool_choice,
                                           reasoning="disabled", parallel_tool_calls=parallel_tool_calls)
    except Exception as e:   # pydantic validation errors and xgrammar's ValueErrors alike
        raise ValueError(f"tools / tool_choice rejected: {e}") from None
    return json.loads(tag.model_dump_json())


def tool_params(params, tools: Any, tool_choice: Any, parallel_tool_calls: bool,
                tool_call_parser: str | None, chat_template: str | None):
    """`params` (a SamplingParams) plus the tool-call grammar and parser; a new object, `params`
    is not mutated. The format is `tool_call_parser` if given, else the chat template's.

    Raises ValueError for malformed tools, an unknown tool name in `tool_choice`, or a second
    grammar (response_format / regex / ebnf / structural_tag) beside a constraining tool_choice.
    """
    tools = validate_tools(tools)
    tool_choice = validate_tool_choice(tool_choice, tools)
    fmt = tool_call_parser or parser_for_template(chat_template)
    tag = tool_structural_tag(tools, tool_choice, parallel_tool_calls, fmt)
    if tag is not None and params.grammar_spec() is not None:
        raise ValueError("tools with tool_choice other than 'none' cannot be combined with "
                         "response_format / regex / ebnf / structural_tag")
    return replace(params, structural_tag=tag, tool_call_parser=None if tool_choice == "none" else fmt)


def render_with_tools(tokenizer, conversation: list[dict], tools: list[dict],
                      add_generation_prompt: bool) -> str:
    """The prompt text: the chat template's own tool rendering if it has one, else the tools in a
    Hermes-style system block (merged into an existing system message)."""
    if tokenizer.chat_template is None:
        raise ValueError("this model has no chat template; tools need one")
    names = [t["function"]["name"] for t in tools]
    text = tokenizer.apply_chat_template(conversation, tools=tools, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    if all(n in text for n in names):
        return text                      # the template rendered the tools itself
    block = DEFAULT_TOOL_PROMPT.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
    conv = [dict(m) for m in conversation]
    if conv and conv[0].get("role") == "system":
        conv[0]["content"] = f"{conv[0].get('content') or ''}\n\n{block}".strip()
    else:
        conv.insert(0, {"role": "system", "content": block})
    return tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=add_generation_prompt)
