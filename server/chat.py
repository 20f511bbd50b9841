"""POST /v1/chat/completions: streamed (SSE) and whole responses."""
from __future__ import annotations

import json
from typing import AsyncIterator

from server.convert import chat_logprobs as requested_logprobs
from server.convert import chat_prompt, check_model, reject_unsupported, sampling_params
from server.deltas import ChoiceDeltas
from server.errors import bad_request, error_body
from server.generation import Generation, GenerationFailed
from server.protocol import (AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk,
                             ChatCompletionRequest, ChatCompletionResponse, DeltaMessage)
from server.responses import chat_logprobs, spec_trace, timings, usage
from server.state import ServerState
from server.structure import check_compiles, check_tools, grammar_param, structure_fields, with_tools


async def start_chat(state: ServerState, req: ChatCompletionRequest) -> Generation:
    """Validate everything and queue the engine requests; raises ServerError before any output."""
    check_model(req.model, state.settings)
    reject_unsupported(req, state.settings)
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options needs stream: true", "stream_options")
    logprobs = requested_logprobs(req)
    fields = structure_fields(req, state.settings)
    tools = check_tools(req, state.settings)
    prompt = chat_prompt(state.tokenizer, req.messages, tools)
    params = sampling_params(req, len(prompt.token_ids), state.max_model_len, state.vocab_size,
                             state.settings, logprobs, fields)
    params = with_tools(params, req, tools, state.tokenizer, state.settings)
    await check_compiles(state.engine.engine, params[0], grammar_param(req))   # all choices share it
    return await Generation.start(state, "chatcmpl", [prompt], [params])


async def chat_response(gen: Generation, req: ChatCompletionRequest) -> ChatCompletionResponse:
    outs = await gen.collect()
    text = gen.state.token_text
    choices = []
    for i, out in enumerate(outs):
        c = out.outputs[0]
        lp = chat_logprobs(c.logprobs, text) if req.logprobs and c.logprobs is not None else None
        # OpenAI: content is null when the answer is only tool calls
        content = None if c.tool_calls and not c.text else c.text
        message = AssistantMessage(content=content, reasoning_content=c.reasoning_content, tool_calls=c.tool_calls)
        choices.append(ChatChoice(index=i, message=message, logprobs=lp, finish_reason=c.finish_reason))
    completion = sum(len(o.outputs[0].token_ids) for o in outs)
    return ChatCompletionResponse(id=gen.response_id, created=gen.created, model=gen.state.settings.served_model_name,
                                  choices=choices, usage=usage(len(gen.prompts[0].token_ids), completion),
                                  timings=timings(outs))


async def chat_stream(gen: Generation, req: ChatCompletionRequest) -> AsyncIterator[str]:
    """SSE data lines: a role chunk per choice, content deltas, a finish chunk per choice (with
    timings), an optional usage chunk, then [DONE]. A failure mid-way is an error event, then [DONE]."""
    model, text = gen.state.settings.served_model_name, gen.state.token_text
    opts = req.stream_options
    include_usage = bool(opts and opts.include_usage)
    include_trace = bool(opts and opts.include_spec_trace)

    def chunk(choices, **extra) -> str:
        return ChatCompletionChunk(id=gen.response_id, created=gen.created, model=model, choices=choices,
                                   **extra).model_dump_json(exclude_none=True)

    parsers: dict[int, ChoiceDeltas] = {}
    held_logprobs: dict[int, list] = {}     # logprobs of tokens whose text a parser still holds back
    try:
        for i in range(gen.num_choices):
            yield chunk([ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))])
        async for index, item in gen.items():
            out = item.output
            c = out.outputs[0]
            parser = parsers.get(index)
            if parser is None:
                parser = parsers[index] = ChoiceDeltas(gen.params[index], out.request_id)
            deltas = parser.feed(c.delta_text, out.finished)
            trace = spec_trace(c.spec_steps, text) if include_trace else None
            lps = held_logprobs.pop(index, []) + list(item.delta_logprobs or [])
            if not deltas and not out.finished and not trace:
                held_logprobs[index] = lps     # nothing to show yet (text held back for a stop string / marker)
                continue
            lp = chat_logprobs(lps, text) if req.logprobs and lps else None
            deltas = deltas or [{"content": ""}]
            for k, d in enumerate(deltas):
                first, last = k == 0, k == len(deltas) - 1
                choice = ChatChunkChoice(index=index, delta=DeltaMessage(**d), logprobs=lp if first else None,
                                         finish_reason=c.finish_reason if out.finished and last else None)
                yield chunk([choice], spec_trace=trace if first else None,
                            timings=timings([out]) if out.finished and last else None)
        if include_usage:
            outs = list(gen.final.values())
            completion = sum(len(o.outputs[0].token_ids) for o in outs)
            yield chunk([], usage=usage(len(gen.prompts[0].token_ids), completion), timings=timings(outs))
    except GenerationFailed as e:
        yield json.dumps(error_body(e.status, e.message, None, "generation_failed"))
    finally:
        gen.close()
    yield "[DONE]"
