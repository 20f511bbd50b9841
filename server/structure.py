"""Structured output, tools and reasoning on the server: request fields -> SamplingParams fields.

Everything here runs while the request is validated, before any SSE header:
`structure_fields` checks response_format (size / nesting limits, shape),
`tools_prompt` renders the tools into the prompt, `with_tools` adds the tool
grammar and parser, and `check_compiles` compiles the grammar in a worker
thread (the engine caches it, so `add_request` then finds it ready). Each
failure is a 400 naming the field; a request never runs unconstrained
because its grammar was dropped.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from grammar.spec import spec_from_fields
from grammar.tools import render_with_tools, tool_params, validate_tool_choice, validate_tools
from server.errors import bad_request
from server.protocol import ChatCompletionRequest, CompletionRequest
from server.settings import ServerSettings
from specdec.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


def structure_fields(req: ChatCompletionRequest | CompletionRequest, settings: ServerSettings) -> dict[str, Any]:
    """SamplingParams keyword arguments for response_format and the reasoning parser."""
    rf = req.response_format
    if rf is not None and rf.json_schema is not None and rf.json_schema.schema_ is not None:
        check_schema_limits(rf.json_schema.schema_, "response_format.json_schema.schema", settings)
    reasoning = None
    if isinstance(req, ChatCompletionRequest):   # /v1/completions returns the raw text
        reasoning = req.reasoning_parser or settings.reasoning_parser
        reasoning = None if reasoning == "none" else reasoning
    response_format = None if rf is None else rf.model_dump(by_alias=True, exclude_none=True)
    try:   # the shape and grammar/'s own limits, attributed to the field
        spec_from_fields(response_format, None, None, None, reasoning)
    except ValueError as e:
        raise bad_request(str(e), "reasoning_parser" if "reasoning_parser" in str(e) else "response_format") from e
    return {"response_format": response_format, "reasoning_parser": reasoning}


def check_tools(req: ChatCompletionRequest, settings: ServerSettings) -> list[dict] | None:
    """The request's tools as plain dicts (validated), or None. Raises a 400 naming the field."""
    for i, tool in enumerate(req.tools or []):
        if tool.function.parameters is not None:
            check_schema_limits(tool.function.parameters, f"tools.{i}.function.parameters", settings)
    if not req.tools:
        if req.tool_choice not in (None, "none", "auto"):
            raise bad_request("tool_choice needs `tools`", "tool_choice")
        return None
    tools = [t.model_dump(exclude_none=True) for t in req.tools]
    try:
        validate_tools(tools)
    except ValueError as e:
        raise bad_request(str(e), "tools") from e
    try:
        validate_tool_choice(_tool_choice(req), tools)
    except ValueError as e:
        raise bad_request(str(e), "tool_choice") from e
    return tools


def tools_prompt(tokenizer, conversation: list[dict], tools: list[dict]) -> str:
    """The prompt text with the tools rendered (the template's own way, or a Hermes system block)."""
    try:
        return render_with_tools(tokenizer, conversation, tools, add_generation_prompt=True)
    except Exception as e:   # no template, or a template that rejects these messages
        raise bad_request(f"could not render the tools into the prompt: {e}", "messages") from e


def with_tools(params: list[SamplingParams], req: ChatCompletionRequest, tools: list[dict] | None,
               tokenizer, settings: ServerSettings) -> list[SamplingParams]:
    """params with the tool-call grammar (tool_choice required / named / auto) and parser set."""
    if tools is None:
        return params
    parser = req.tool_call_parser or settings.tool_call_parser
    parallel = True if req.parallel_tool_calls is None else req.parallel_tool_calls
    try:
        return [tool_params(p, tools, _tool_choice(req), parallel, parser, tokenizer.chat_template)
                for p in params]
    except ValueError as e:
        param = "response_format" if "cannot be combined" in str(e) else "tools"
        raise bad_request(str(e), param) from e


async def check_compiles(engine, params: SamplingParams, param: str) -> None:
    """Compile params' grammar off the event loop (cached by the engine); 400 if it does not compile."""
    if params.grammar_spec() is None:
        return
    prepare = getattr(engine, "prepare_grammar", None)
    if prepare is None:
        raise bad_request("this engine does not support structured output", param, "unsupported")
    try:
        await asyncio.to_thread(prepare, params)
    except ValueError as e:
        message = str(e)
        if param == "tools":      # the structural tag is ours; the client wrote the parameters
            message = message.replace("structural_tag does not compile", "the tools' parameters do not compile")
        raise bad_request(message, param, "invalid_grammar") from e
    except Exception as e:   # xgrammar failing some other way on this input: still the request's fault
        logger.warning("grammar compile failed unexpectedly: %r", e)
        raise bad_request(f"the grammar could not be compiled: {type(e).__name__}: {e}", param,
                          "invalid_grammar") from e


def grammar_param(req: ChatCompletionRequest | CompletionRequest) -> str:
    """The field a compile failure is blamed on."""
    rf = req.response_format
    return "response_format" if rf is not None and rf.type != "text" else "tools"


def check_schema_limits(schema: Any, param: str, settings: ServerSettings) -> None:
    size = len(json.dumps(schema))
    if size > settings.max_schema_bytes:
        raise bad_request(f"schema is {size} bytes; the limit is {settings.max_schema_bytes}", param)
    if _depth(schema) > settings.max_schema_depth:
        raise bad_request(f"schema nests deeper than {settings.max_schema_depth} levels", param)


def _tool_choice(req: ChatCompletionRequest) -> str | dict:
    choice = req.tool_choice
    if choice is None:
        return "auto"            # OpenAI's default when tools are given
    return choice if isinstance(choice, str) else choice.model_dump()


def _depth(obj: Any) -> int:
    # iterative, so a hostile schema cannot hit Python's recursion limit here
    best, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        best = max(best, d)
        if isinstance(node, dict):
            stack += [(v, d + 1) for v in node.values()]
        elif isinstance(node, list):
            stack += [(v, d + 1) for v in node]
    return best

