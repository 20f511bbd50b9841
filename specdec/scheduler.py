"""Scheduler: continuous batching, chunked prefill under a token budget, preemption.

Each step: running requests first (oldest first), then waiting ones while the
token budget and `max_num_seqs` allow. A request in decode may also reserve
lookahead slots for its draft tree. When the pool has no room, the newest
running request is preempted (its blocks freed, recomputed later); speculation
is dropped before anyone is preempted.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from specdec.block_manager import BlockManager
from specdec.request import Request, RequestStatus


@dataclass(slots=True)
class ScheduledRequest:
    req: Request
    num_new_tokens: int          # uncomputed tokens fed this step (prefill chunk, or the root)
    num_lookahead: int = 0       # slots reserved past them for draft-tree nodes
    num_committed: int = 0       # set after verification: new tokens whose K/V are now kept

    @property
    def produces_token(self) -> bool:
        """This step reaches the end of the known tokens, so it samples the next one."""
        return self.req.num_computed_tokens + self.num_new_tokens == self.req.num_tokens


@dataclass(slots=True)
class SchedulerOutput:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 lookahead_fn: Callable[[Request], int] = lambda req: 0,
                 on_preempt: Callable[[Request], None] = lambda req: None):
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.lookahead_fn = lookahead_fn     # draft-tree slots a decoding request wants
        self.on_preempt = on_preempt         # lets the proposer drop per-request state
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    def add(self, req: Request) -> None:
        self.waiting.append(req)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        queue = list(self.running)
        kept: list[Request] = []
        while queue:
            req = queue.pop(0)
            num_new = min(self._chunk_end(req) - req.num_computed_tokens, budget)
            if num_new <= 0:
                kept.append(req)           # budget spent; runs next step
                continue
            lookahead = 0
            if not req.is_prefilling:
                lookahead = max(0, min(self.lookahead_fn(req), budget - num_new))
            while not self.bm.allocate(req, req.num_computed_tokens + num_new + lookahead):
                if lookahead:              # drop speculation before preempting anyone
                    lookahead = 0
                    continue
                victim = queue.pop() if queue else req
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is req:
                    break
            else:
                out.scheduled.append(ScheduledRequest(req, num_new, lookahead))
                kept.append(req)
                budget -= num_new + lookahead
        self.running = kept
        # waiting requests join only when nobody had to be preempted this step
        while (self.waiting and budget > 0 and len(self.running) < self.max_num_seqs
               and not out.preempted):
            req = self.waiting[0]
            if not req.block_table:
                req.num_computed_tokens = self.bm.match_prefix(req)
                req.metrics.num_cached_prompt_tokens = req.num_computed_tokens
            num_new = min(self._chunk_end(req) - req.num_computed_tokens, budget)
            if not self.bm.allocate(req, req.num_computed_tokens + num_new):
                self.bm.free(req)          # give cache hits back; retry when room frees
                req.num_computed_tokens = 0
                break
            self.waiting.popleft()
            req.status = RequestStatus.RUNNING
            if req.metrics.first_scheduled_time is None:
                req.metrics.first_scheduled_time = time.monotonic()
            self.running.append(req)
            out.scheduled.append(ScheduledRequest(req, num_new))
            budget -= num_new
        return out

    @staticmethod
    def _chunk_end(req: Request) -> int:
        """A chunk never crosses the prompt's end: a request recomputed after preemption
        prefills its prompt, then its generated tokens as one separate chunk (which the model
        runner computes row by row, exactly as they were decoded; see causal_segment)."""
        if req.num_computed_tokens < req.num_prompt_tokens:
            return req.num_prompt_tokens
        return req.num_tokens

    def update(self, batch: SchedulerOutput) -> list[Request]:
        """Commit the step's accounting; free finished requests. Returns those finished."""
        finished = []
        for s in batch.scheduled:
            req = s.req
            if req.finish_reason is not None:
                finished.append(req)
                continue
            req.num_computed_tokens += s.num_committed
            assert req.num_computed_tokens <= req.num_tokens
            # rollback: release lookahead blocks the next step will not need
            self.bm.truncate(req, req.num_tokens)
            self.bm.register_full_blocks(req)
        for req in finished:
            self.finish(req)
        return finished

    def finish(self, req: Request) -> None:
        """Remove a request wherever it is and free its blocks (also used by abort)."""
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        self.bm.free(req)
        req.status = RequestStatus.FINISHED

    def _preempt(self, req: Request) -> None:
        self.running.remove(req) if req in self.running else None
        self.bm.free(req)
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        req.status = RequestStatus.WAITING
        self.on_preempt(req)
        self.waiting.appendleft(req)
