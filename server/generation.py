"""One HTTP generation: its engine requests (n choices per prompt), their outputs, and cleanup.

`start` adds every engine request and returns only once the engine accepted
all of them, so every error is known before any SSE header is sent. `close`
aborts whatever has not finished (client gone, error, shutdown): the blocks
are freed by the engine thread.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator

from server.async_engine import EngineFailure, StepOutput
from server.convert import EnginePrompt
from server.errors import ServerError, bad_request
from server.state import ServerState
from specdec.outputs import RequestOutput
from specdec.sampling_params import SamplingParams

FAILED_REASONS = ("error", "abort")


class GenerationFailed(Exception):
    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass
class Generation:
    state: ServerState
    response_id: str
    prompts: list[EnginePrompt]
    num_choices: int
    created: int = field(default_factory=lambda: int(time.time()))
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    choice_of: dict[str, int] = field(default_factory=dict)   # engine request id -> choice index
    final: dict[int, RequestOutput] = field(default_factory=dict)
    params: list[SamplingParams] = field(default_factory=list)   # per choice index
    closed: bool = False

    @classmethod
    async def start(cls, state: ServerState, prefix: str, prompts: list[EnginePrompt],
                    params: list[list[SamplingParams]]) -> "Generation":
        """params[p]: one SamplingParams per choice of prompt p; choice index = p * n + j."""
        num = sum(len(ps) for ps in params)
        state.admit(num)
        gen = cls(state, f"{prefix}-{uuid.uuid4().hex}", prompts, num)
        state.num_in_flight += 1
        try:
            index = 0
            for prompt, ps in zip(prompts, params):
                for sp in ps:
                    rid = f"{gen.response_id}-{index}"
                    gen.choice_of[rid] = index
                    gen.params.append(sp)
                    await state.engine.add(rid, prompt.token_ids, sp, prompt.text, gen.queue)
                    index += 1
        except ValueError as e:
            gen.close()
            raise bad_request(str(e)) from e
        except BaseException:
            gen.close()
            raise
        return gen

    def prompt_of(self, index: int) -> EnginePrompt:
        return self.prompts[index * len(self.prompts) // self.num_choices]

    async def items(self) -> AsyncIterator[tuple[int, StepOutput]]:
        """Step outputs of every choice as they come, until all finished. Raises GenerationFailed."""
        while len(self.final) < self.num_choices:
            item = await self.queue.get()
            if isinstance(item, EngineFailure):
                raise GenerationFailed(item.message, item.status)
            out = item.output
            index = self.choice_of[out.request_id]
            c = out.outputs[0]
            if c.finish_reason in FAILED_REASONS:
                message = getattr(c, "error", None) or f"generation ended with finish_reason {c.finish_reason!r}"
                raise GenerationFailed(message, 500)
            if out.finished:
                self.final[index] = out
                self.state.metrics.observe_finished(out)
            yield index, item

    async def collect(self) -> list[RequestOutput]:
        """Non-streaming: wait for every choice; outputs in choice order."""
        try:
            async for _ in self.items():
                pass
        except GenerationFailed as e:
            raise ServerError(e.status, e.message, None, "generation_failed") from e
        finally:
            self.close()
        return [self.final[i] for i in range(self.num_choices)]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.state.num_in_flight -= 1
        for rid, index in self.choice_of.items():
            if index not in self.final:
                self.state.engine.abort(rid)
