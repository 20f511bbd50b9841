"""Request: one sequence's tokens, accounting and state as it moves through the engine.

One accounting rule covers prefill, decode and speculation: `num_computed_tokens`
is how many of `token_ids` have K/V committed in the pool; each step it catches
up with `len(token_ids)`. Draft-tree nodes live in extra lookahead slots past
it; rollback lowers it and frees the unused tail.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from specdec.outputs import Logprob, RequestMetrics
from specdec.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    eos_token_ids: tuple[int, ...]
    prompt: str | None = None
    token_ids: list[int] = field(default_factory=list)    # prompt + output
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)  # shared by target and draft
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    error: str | None = None                              # why it failed (finish_reason "error")
    generator: torch.Generator | None = None              # set when params.seed is given
    logprobs: list[Logprob] | None = None
    metrics: RequestMetrics = field(default_factory=lambda: RequestMetrics(time.monotonic()))
    detok: Any = None                                     # IncrementalDetokenizer
    spec: Any = None                                      # proposer's per-request state
    accept_ema: float | None = None                       # EMA of accepted draft tokens per step
    spec_skip_steps: int = 0                              # plain steps left before drafting again
    spec_backoff: int = 1                                 # probe interval multiplier (failed probes)
    spec_probing: bool = False                            # this step's draft is a probe
    num_preemptions: int = 0
    grammar: Any = None                                   # grammar.matcher.RequestGrammar when constrained

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)
        if self.params.logprobs is not None:
            self.logprobs = []

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def is_prefilling(self) -> bool:
        """More than the last sampled token is still uncomputed."""
        return self.num_tokens - self.num_computed_tokens > 1

    @property
    def is_finished(self) -> bool:
        return self.status == RequestStatus.FINISHED
