"""Request -> engine input: the prompt (chat template) and one SamplingParams per choice.

This is the one seam between the wire format and the engine: `chat_prompt` is
where tools reach the chat template, `sampling_params` is where the grammar
fields (server/structure.py) reach SamplingParams.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.errors import ServerError, bad_request
from server.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest, SamplingFields
from server.settings import ServerSettings
from server.structure import tools_prompt
from specdec.sampling_params import SamplingParams

LOGIT_BIAS_LIMIT = 100.0


@dataclass(slots=True)
class EnginePrompt:
    text: str | None
    token_ids: list[int]


def check_model(model: str | None, settings: ServerSettings) -> None:
    if model is not None and model != settings.served_model_name:
        raise ServerError(404, f"The model `{model}` does not exist.", "model", "model_not_found")


def reject_unsupported(req: ChatCompletionRequest | CompletionRequest, settings: ServerSettings) -> None:
    """What this server cannot honour, refused in one place (400, never ignored)."""
    if isinstance(req, CompletionRequest) and req.suffix:
        raise bad_request("suffix (fill-in-the-middle) is not supported", "suffix", "unsupported")


# ---- prompts ---------------------------------------------------------------------
def message_dicts(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as the chat template wants them: content as plain text."""
    out = []
    for i, m in enumerate(messages):
        content = m.content
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.type != "text":
                    raise bad_request("only text content parts are supported", f"messages.{i}.content")
                texts.append(part.text)
            content = "".join(texts)
        d: dict[str, Any] = {"role": m.role, "content": content if content is not None else ""}
        for key in ("name", "tool_calls", "tool_call_id"):
            if getattr(m, key) is not None:
                d[key] = getattr(m, key)
        out.append(d)
    return out


def chat_prompt(tokenizer, messages: list[ChatMessage], tools: list[dict] | None = None) -> EnginePrompt:
    """The same template call as LLM.apply_chat_template (LLM.chat with tools: render_with_tools),
    so server text == LLM.chat text."""
    if tokenizer.chat_template is None:
        raise bad_request("this model has no chat template; use /v1/completions", "messages")
    if tools is not None:
        text = tools_prompt(tokenizer, message_dicts(messages), tools)
        return EnginePrompt(text, tokenizer.encode(text, add_special_tokens=False))
    try:
        text = tokenizer.apply_chat_template(message_dicts(messages), tokenize=False,
                                             add_generation_prompt=True)
    except ServerError:
        raise
    except Exception as e:  # a template may reject a role order or content it does not expect
        raise bad_request(f"chat template failed on these messages: {e}", "messages") from e
    return EnginePrompt(text, tokenizer.encode(text, add_special_tokens=False))


def completion_prompts(tokenizer, prompt, vocab_size: int) -> list[EnginePrompt]:
    """`prompt` as OpenAI allows it: a string, strings, token ids, or lists of token ids."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise bad_request("prompt is empty", "prompt")
    if all(isinstance(p, int) for p in prompt):
        prompt = [prompt]
    out = []
    for p in prompt:
        if isinstance(p, str):
            if not p:
                raise bad_request("prompt is empty: give a non-empty string", "prompt")
            out.append(EnginePrompt(p, tokenizer.encode(p)))
        else:
            if not p or any(t < 0 or t >= vocab_size for t in p):
                raise bad_request(f"prompt token ids must be a non-empty list of integers in [0, {vocab_size})",
                                  "prompt")
            out.append(EnginePrompt(None, list(p)))
    return out


# ---- sampling --------------------------------------------------------------------
def sampling_params(req: SamplingFields, prompt_len: int, max_model_len: int, vocab_size: int,
                    settings: ServerSettings, logprobs: int | None,
                    grammar_fields: dict[str, Any] | None = None) -> list[SamplingParams]:
    """One SamplingParams per choice (n), validated against the limits and the context.
    grammar_fields: response_format / reasoning_parser (server/structure.py), passed through."""
    if req.n > settings.max_n:
        raise bad_request(f"n must be <= {settings.max_n}, got {req.n}", "n")
    room = max_model_len - prompt_len
    if room < 1:
        raise bad_request(f"the prompt has {prompt_len} tokens but the context limit is {max_model_len}",
                          "messages" if isinstance(req, ChatCompletionRequest) else "prompt",
                          "context_length_exceeded")
    max_tokens, param = req.max_tokens, "max_tokens"
    if isinstance(req, ChatCompletionRequest) and req.max_completion_tokens is not None:
        max_tokens, param = req.max_completion_tokens, "max_completion_tokens"
    limit = settings.max_tokens_limit or max_model_len
    if max_tokens is None:
        max_tokens = min(room, settings.default_max_tokens or room)
    elif max_tokens > limit:
        raise bad_request(f"{param} must be <= {limit}, got {max_tokens}", param)
    elif max_tokens > room:
        raise bad_request(f"this model's context is {max_model_len} tokens: the prompt has {prompt_len}, "
                          f"so {param} can be at most {room}, got {max_tokens}", param, "context_length_exceeded")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > settings.max_stop or any(not s for s in stop):
        raise bad_request(f"stop must be at most {settings.max_stop} non-empty strings", "stop")
    bias = _logit_bias(req.logit_bias, vocab_size)
    base = dict(
        max_tokens=max_tokens, temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p, top_k=-1 if req.top_k is None else req.top_k,
        min_p=req.min_p or 0.0, presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        logit_bias=bias, stop=stop, ignore_eos=req.ignore_eos, logprobs=logprobs,
        num_speculative_tokens=req.num_speculative_tokens, **(grammar_fields or {}))
    out = []
    for i in range(req.n):
        # n choices from one seed must differ, and stay reproducible
        seed = None if req.seed is None else (req.seed + i) % (2**63)
        try:
            out.append(SamplingParams(seed=seed, **base))
        except ValueError as e:
            # SamplingParams' messages start with the field's name; blame it when it is a request field
            field = str(e).split(" ", 1)[0]
            raise bad_request(str(e), field if field in type(req).model_fields else None) from e
    return out


def chat_logprobs(req: ChatCompletionRequest) -> int | None:
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    return (req.top_logprobs or 0) if req.logprobs else None


def _logit_bias(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float] | None:
    if not bias:
        return None
    out = {}
    for key, value in bias.items():
        try:
            tok = int(key)
        except ValueError:
            raise bad_request(f"logit_bias keys must be token ids, got {key!r}", "logit_bias") from None
        if not 0 <= tok < vocab_size:
            raise bad_request(f"logit_bias token id {tok} is outside [0, {vocab_size})", "logit_bias")
        if not -LOGIT_BIAS_LIMIT <= value <= LOGIT_BIAS_LIMIT:
            raise bad_request(f"logit_bias values must be in [-100, 100], got {value}", "logit_bias")
        out[tok] = float(value)
    return out
