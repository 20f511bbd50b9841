"""What every runner returns for one request, whatever the system."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from evals import stats


@dataclass(slots=True)
class Generation:
    token_ids: list[int]            # output ids only (no prompt)
    arrival_time: float             # request handed to the system; same clock as token_times
    token_times: list[float]        # emission time of each output token (tokens of one step share it)
    num_forwards: int | None = None # target forwards, where the system can tell us
    accepted_per_depth: list[int] = field(default_factory=list)
    drafted_per_depth: list[int] = field(default_factory=list)
    num_cached_prompt_tokens: int = 0  # prompt tokens a prefix cache served (TTFT is then not cold)

    def __post_init__(self) -> None:
        assert len(self.token_ids) == len(self.token_times), "one timestamp per output token"

    @property
    def latency(self) -> stats.RequestLatency:
        return stats.request_latency(self.arrival_time, self.token_times)

    @property
    def tau(self) -> float | None:
        return stats.tau(len(self.token_ids), self.num_forwards)


@dataclass(slots=True)
class BatchResult:
    wall_time: float                # first request added -> last token out
    generations: list[Generation]

    @property
    def output_tok_s(self) -> float:
        return sum(len(g.token_ids) for g in self.generations) / self.wall_time


class Runner(Protocol):
    name: str

    def generate(self, prompt_ids: list[int], max_tokens: int, ignore_eos: bool) -> Generation:
        """Greedy decoding of one request at batch 1."""

    def close(self) -> None:
        """Free the model before the next runner loads its own."""
