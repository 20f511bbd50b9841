"""SamplingParams: per-request decoding settings, validated at construction (vLLM's shape).

`validate()` runs at construction and again when a request is added (the
fields are plain attributes a caller may change in between). Every failure is
a ValueError naming the field and its allowed range.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grammar.spec import GrammarSpec, spec_from_fields

from specdec.validation import MAX_SEED, check_bool, check_float, check_int, check_text

MIN_TEMPERATURE = 1e-5       # below this, logits / temperature overflows fp32: use 0 (greedy)
MAX_LOGIT_BIAS = 100.0       # OpenAI's range for logit_bias values
MAX_STOP_STRINGS = 64
MAX_STOP_CHARS = 1024        # each stop string is searched after every token
MAX_STOP_TOKEN_IDS = 1024
MAX_LOGPROBS = 20
MAX_SPECULATIVE_TOKENS = 16  # the engine's own cap (SpeculativeConfig)


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
        self.validate()

    def validate(self) -> None:
        """Check every field (and normalise: stop -> list, top_k 0 -> -1). Raises ValueError."""
        self.max_tokens = check_int("max_tokens", self.max_tokens, 1, optional=True)
        self.temperature = check_float("temperature", self.temperature, 0.0)
        if 0.0 < self.temperature < MIN_TEMPERATURE:
            raise ValueError(f"temperature must be 0 (greedy) or >= {MIN_TEMPERATURE}, got {self.temperature!r}")
        self.top_k = check_int("top_k", self.top_k, -1)
        self.top_p = check_float("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        self.min_p = check_float("min_p", self.min_p, 0.0, 1.0)
        self.repetition_penalty = check_float("repetition_penalty", self.repetition_penalty, 0.01, 100.0)
        self.frequency_penalty = check_float("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        self.presence_penalty = check_float("presence_penalty", self.presence_penalty, -2.0, 2.0)
        self.logit_bias = _check_logit_bias(self.logit_bias)
        self.seed = check_int("seed", self.seed, 0, MAX_SEED, optional=True)
        self.stop = _check_stop(self.stop)
        self.stop_token_ids = _check_id_list("stop_token_ids", self.stop_token_ids, MAX_STOP_TOKEN_IDS)
        self.ignore_eos = check_bool("ignore_eos", self.ignore_eos)
        self.include_stop_str_in_output = check_bool("include_stop_str_in_output",
                                                     self.include_stop_str_in_output)
        self.logprobs = check_int("logprobs", self.logprobs, 0, MAX_LOGPROBS, optional=True)
        if check_int("n", self.n, 1) != 1:
            raise ValueError(f"n must be 1 (only n=1 is supported), got {self.n}")
        self.num_speculative_tokens = check_int("num_speculative_tokens", self.num_speculative_tokens,
                                                0, MAX_SPECULATIVE_TOKENS, optional=True)
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


def _check_logit_bias(bias) -> dict[int, float] | None:
    if bias is None:
        return None
    if not isinstance(bias, dict):
        raise ValueError(f"logit_bias must be a dict {{token id: bias}} or None, got {type(bias).__name__}")
    # token ids are checked against the vocabulary when the request is added
    return {check_int("logit_bias key", k, 0): check_float(f"logit_bias[{k!r}]", v, -MAX_LOGIT_BIAS,
                                                           MAX_LOGIT_BIAS)
            for k, v in bias.items()}


def _check_stop(stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)):
        raise ValueError(f"stop must be a string, a list of strings or None, got {type(stop).__name__}")
    if len(stop) > MAX_STOP_STRINGS:
        raise ValueError(f"stop must have at most {MAX_STOP_STRINGS} strings, got {len(stop)}")
    return [check_text(f"stop[{i}]", s, MAX_STOP_CHARS, allow_empty=False) for i, s in enumerate(stop)]


def _check_id_list(name: str, ids, max_len: int) -> list[int]:
    if ids is None:
        return []
    if not isinstance(ids, (list, tuple)):
        raise ValueError(f"{name} must be a list of token ids, got {type(ids).__name__}")
    if len(ids) > max_len:
        raise ValueError(f"{name} must have at most {max_len} ids, got {len(ids)}")
    return [check_int(f"{name}[{i}]", t, 0) for i, t in enumerate(ids)]
