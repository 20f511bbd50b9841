"""SamplingParams: per-request decoding settings, validated at construction (vLLM's shape)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grammar.spec import GrammarSpec, spec_from_fields


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int | None = 16          # new tokens; None = until the context is full
    temperature: float = 1.0             # 0 = greedy
    top_k: int = -1                      # -1 / 0 = off
    top_p: float = 1.0                   # nucleus mass kept
    min_p: float = 0.0                   # drop tokens below min_p * max prob
    repetition_penalty: float = 1.0      # HF/CTRL style, over prompt + output
    frequency_penalty: float = 0.0       # OpenAI style, over output counts
    presence_penalty: float = 0.0        # OpenAI style, over output presence
    logit_bias: dict[int, float] | None = None
    seed: int | None = None              # per-request generator for reproducibility
    stop: list[str] | str | None = None  # stop strings (not included in the text)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None          # None = off; k >= 0 = sampled token + top-k
    n: int = 1                           # only 1 is supported
    num_speculative_tokens: int | None = None  # per-request draft depth cap; None = engine's, 0 = plain
    # structured output (docs/grammar.md); at most one of the four grammars
    response_format: dict[str, Any] | None = None  # OpenAI: {"type": "text"|"json_object"|"json_schema", ...}
    regex: str | None = None             # output matches this regex
    ebnf: str | None = None              # output matches this xgrammar EBNF grammar (root rule `root`)
    structural_tag: dict[str, Any] | str | None = None  # xgrammar structural tag (tool calls use it)
    reasoning_parser: str | None = None  # "deepseek_r1" | "qwen3": <think>..</think> -> reasoning_content,
                                         # the grammar starts right after </think>
    tool_call_parser: str | None = None  # "hermes" | "llama3": parse tool calls from the finished text

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        checks = [
            (self.max_tokens is None or self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens}"),
            (self.temperature >= 0.0, f"temperature must be >= 0, got {self.temperature}"),
            (self.top_k == -1 or self.top_k >= 0, f"top_k must be -1 (off) or >= 0, got {self.top_k}"),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}"),
            (0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}"),
            (self.repetition_penalty > 0.0, f"repetition_penalty must be > 0, got {self.repetition_penalty}"),
            (-2.0 <= self.frequency_penalty <= 2.0, f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}"),
            (-2.0 <= self.presence_penalty <= 2.0, f"presence_penalty must be in [-2, 2], got {self.presence_penalty}"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, f"logprobs must be in [0, 20], got {self.logprobs}"),
            (self.n == 1, f"only n=1 is supported, got {self.n}"),
            (self.num_speculative_tokens is None or self.num_speculative_tokens >= 0,
             f"num_speculative_tokens must be >= 0, got {self.num_speculative_tokens}"),
            (all(s for s in self.stop), "stop strings must be non-empty"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        if self.grammar_spec() is not None and self.ignore_eos:
            raise ValueError("ignore_eos cannot be combined with a grammar: a finished grammar ends with EOS")
        if self.tool_call_parser not in (None, "hermes", "llama3"):
            raise ValueError(f"tool_call_parser must be 'hermes', 'llama3' or None, got {self.tool_call_parser!r}")
        if self.top_k == 0:
            self.top_k = -1

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    def grammar_spec(self) -> GrammarSpec | None:
        """The grammar this request asks for (canonical, the compile-cache key), or None."""
        return spec_from_fields(self.response_format, self.regex, self.ebnf, self.structural_tag,
                                self.reasoning_parser)

    @property
    def has_penalties(self) -> bool:
        return (self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0
                or self.presence_penalty != 0.0)
