"""POST /v1/completions: text in, text out (the legacy API), streamed or whole."""
from __future__ import annotations

import json
from typing import AsyncIterator

from server.convert import check_model, completion_prompts, reject_unsupported, sampling_params
from server.errors import bad_request, error_body
from server.generation import Generation, GenerationFailed
from server.protocol import CompletionChoice, CompletionRequest, CompletionResponse
from server.responses import completion_logprobs, spec_trace, timings, usage
from server.state import ServerState
from server.structure import check_compiles, grammar_param, structure_fields


async def start_completion(state: ServerState, req: CompletionRequest) -> Generation:
    check_model(req.model, state.settings)
    reject_unsupported(req, state.settings)
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options needs stream: true", "stream_options")
    if req.echo and req.stream:
        raise bad_request("echo is not supported with stream: true", "echo")
    fields = structure_fields(req, state.settings)
    prompts = completion_prompts(state.tokenizer, req.prompt, state.vocab_size)
    if len(prompts) * req.n > state.settings.max_n * 4:
        raise bad_request(f"at most {state.settings.max_n * 4} choices (prompts x n) per request", "prompt")
    params = [sampling_params(req, len(p.token_ids), state.max_model_len, state.vocab_size, state.settings,
                              req.logprobs, fields) for p in prompts]
    await check_compiles(state.engine.engine, params[0][0], grammar_param(req))
    return await Generation.start(state, "cmpl", prompts, params)


def _prompt_text(gen: Generation, index: int) -> str:
    p = gen.prompt_of(index)
    return p.text if p.text is not None else gen.state.tokenizer.decode(p.token_ids)


async def completion_response(gen: Generation, req: CompletionRequest) -> CompletionResponse:
    outs = await gen.collect()
    choices = []
    for i, out in enumerate(outs):
        c = out.outputs[0]
        prefix = _prompt_text(gen, i) if req.echo else ""
        lp = (completion_logprobs(c.logprobs, gen.state.token_text, len(prefix))
              if req.logprobs is not None and c.logprobs is not None else None)
        choices.append(CompletionChoice(index=i, text=prefix + c.text, logprobs=lp, finish_reason=c.finish_reason))
    prompt_tokens = sum(len(p.token_ids) for p in gen.prompts)
    completion = sum(len(o.outputs[0].token_ids) for o in outs)
    return CompletionResponse(id=gen.response_id, created=gen.created, model=gen.state.settings.served_model_name,
                              choices=choices, usage=usage(prompt_tokens, completion), timings=timings(outs))


async def completion_stream(gen: Generation, req: CompletionRequest) -> AsyncIterator[str]:
    model, text = gen.state.settings.served_model_name, gen.state.token_text
    opts = req.stream_options
    include_trace = bool(opts and opts.include_spec_trace)
    offsets = [0] * gen.num_choices

    def chunk(choices, **extra) -> str:
        return CompletionResponse(id=gen.response_id, created=gen.created, model=model, choices=choices,
                                  **extra).model_dump_json(exclude_none=True)

    try:
        async for index, item in gen.items():
            out = item.output
            c = out.outputs[0]
            trace = spec_trace(c.spec_steps, text) if include_trace else None
            if not c.delta_text and not out.finished and not trace:
                continue
            lp = None
            if req.logprobs is not None and item.delta_logprobs:
                lp = completion_logprobs(item.delta_logprobs, text, offsets[index])
            offsets[index] += len(c.delta_text)
            choice = CompletionChoice(index=index, text=c.delta_text, logprobs=lp,
                                      finish_reason=c.finish_reason if out.finished else None)
            yield chunk([choice], spec_trace=trace, timings=timings([out]) if out.finished else None)
        if opts and opts.include_usage:
            outs = list(gen.final.values())
            prompt_tokens = sum(len(p.token_ids) for p in gen.prompts)
            yield chunk([], usage=usage(prompt_tokens, sum(len(o.outputs[0].token_ids) for o in outs)),
                        timings=timings(outs))
    except GenerationFailed as e:
        yield json.dumps(error_body(e.status, e.message, None, "generation_failed"))
    finally:
        gen.close()
    yield "[DONE]"
