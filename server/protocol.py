"""OpenAI wire format: request models (validated) and response models (what we send).

Request fields follow OpenAI's names and ranges; a value outside them is a 400
naming the field (errors.py maps pydantic's errors). Extension fields used by
llama.cpp / vLLM clients (top_k, min_p, repetition_penalty) sit beside them.
Unknown fields are ignored, as OpenAI-compatible servers commonly do.
"""
from __future__ import annotations

import time
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**63 - 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, populate_by_name=True)


# ---- messages and tools ------------------------------------------------------------
class TextPart(_Model):
    type: Literal["text"]
    text: str


class ImagePart(_Model):
    type: Literal["image_url"]
    image_url: dict[str, Any]


class ChatMessage(_Model):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[Union[TextPart, ImagePart]], None] = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None      # assistant turns replayed by the client
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class FunctionDef(_Model):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Model):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Model):
    name: str


class NamedToolChoice(_Model):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(_Model):
    name: str = Field(default="response", max_length=128)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class StreamOptions(_Model):
    include_usage: bool = False
    include_spec_trace: bool = False   # specdec: per verify step drafted / accepted / bonus tokens


# ---- requests --------------------------------------------------------------------
class SamplingFields(_Model):
    """Fields shared by /v1/chat/completions and /v1/completions."""
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    logit_bias: dict[str, float] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    stop: Union[str, list[str], None] = None
    n: int = Field(default=1, ge=1)
    user: str | None = None
    ignore_eos: bool = False
    num_speculative_tokens: int | None = Field(default=None, ge=0, le=16)  # specdec: 0 = plain decoding


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: bool | None = None
    # specdec / vLLM-style extensions; None = the server's --reasoning-parser / --tool-call-parser
    reasoning_parser: Literal["deepseek_r1", "qwen3", "none"] | None = None
    tool_call_parser: Literal["hermes", "llama3"] | None = None


class CompletionRequest(SamplingFields):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    suffix: str | None = None
    response_format: ResponseFormat | None = None


class TokenizeRequest(_Model):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True


class DetokenizeRequest(_Model):
    model: str | None = None
    tokens: list[int]


# ---- responses -------------------------------------------------------------------
class Usage(_Model):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(_Model):
    """llama.cpp's `timings`, so clients that read it (and ours) see what speculation did."""
    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float
    predicted_per_second: float
    draft_n: int
    draft_n_accepted: int


class TopLogprob(_Model):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(_Model):
    content: list[TokenLogprob] | None = None


class AssistantMessage(_Model):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(_Model):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(_Model):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    timings: Timings | None = None


class DeltaMessage(_Model):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class SpecTraceStep(_Model):
    drafted: list[str]      # token texts of the drafted path (accepted prefix, then rejected)
    accepted: int           # drafted[:accepted] were accepted
    bonus: str              # the token the target added after them


class ChatChunkChoice(_Model):
    index: int
    delta: DeltaMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Model):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    timings: Timings | None = None
    spec_trace: list[SpecTraceStep] | None = None


class CompletionLogprobs(_Model):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(_Model):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(_Model):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    timings: Timings | None = None
    spec_trace: list[SpecTraceStep] | None = None


class ModelCard(_Model):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "specdec"
    max_model_len: int


class ModelList(_Model):
    object: Literal["list"] = "list"
    data: list[ModelCard]
