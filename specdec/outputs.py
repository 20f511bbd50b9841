"""What the engine hands back: RequestOutput / CompletionOutput (vLLM's shape) and metrics."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Logprob:
    token_id: int
    logprob: float
    top: dict[int, float]  # top-k alternatives (token id -> logprob), may include token_id


@dataclass(slots=True)
class RequestMetrics:
    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    token_times: list[float] = field(default_factory=list)  # time each output token was emitted
    num_forwards: int = 0           # target forwards that emitted >= 1 token for this request
    num_drafted_tokens: int = 0     # draft tokens verified
    num_accepted_tokens: int = 0    # draft tokens accepted
    accepted_per_depth: list[int] = field(default_factory=list)  # accepted count at depth 1, 2, ...
    drafted_per_depth: list[int] = field(default_factory=list)   # steps that drafted depth 1, 2, ...
    num_cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache

    @property
    def tau(self) -> float:
        """Tokens emitted per target forward (incl. bonus); 1.0 for plain decoding."""
        return len(self.token_times) / self.num_forwards if self.num_forwards else 0.0


@dataclass(slots=True)
class SpecStep:
    """One verify step as a client may show it: the drafted path, how much of it the target
    accepted, and the token the target added. Plain decoding: draft_token_ids == []."""
    draft_token_ids: list[int]   # accepted nodes' tokens, then the rejected rest of the draft's main path
    num_accepted: int            # draft_token_ids[:num_accepted] were accepted
    bonus_token_id: int          # sampled from the target after the accepted prefix


@dataclass(slots=True)
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None      # "stop" | "length" | "tool_calls" | "abort" | "error" | None while running
    stop_reason: int | str | None = None  # the stop string or token id that ended it
    error: str | None = None              # with finish_reason "error": what failed, for this request
    logprobs: list[Logprob] | None = None
    delta_text: str = ""                  # text new since the previous RequestOutput (streaming)
    delta_token_ids: list[int] = field(default_factory=list)
    # with a reasoning parser: the <think> text (and `text` is the answer after </think>)
    reasoning_content: str | None = None
    # with a tool-call parser, once finished: OpenAI-shaped calls
    # [{"id", "type": "function", "function": {"name", "arguments": JSON string}}];
    # `text` is then the content outside the calls and finish_reason "tool_calls"
    tool_calls: list[dict] | None = None
    spec_steps: list[SpecStep] = field(default_factory=list)  # verify steps behind this delta


@dataclass(slots=True)
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
