"""AsyncEngine: the engine steps on its own thread; the asyncio loop never waits on a step.

The loop side only queues commands (add / abort) and reads per-request output
queues. The engine thread applies queued commands between steps, steps while
any request is unfinished, and blocks on a condition when idle (no spinning).
Outputs go back to the loop with one `call_soon_threadsafe` per step.

`engine` is an LLMEngine or anything with the same surface: `tokenizer`,
`max_model_len`, `model_config.vocab_size`, `add_request(id, ids, params, prompt=)`,
`abort_request(id)`, `has_unfinished_requests()`, `step() -> list[RequestOutput]`,
and for stats `scheduler.running / .waiting`, `block_manager.num_blocks / .num_free_blocks`,
`spec_metrics` (tests and the web page can pass a scripted engine).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import deque
from dataclasses import dataclass

from specdec.outputs import Logprob, RequestOutput
from specdec.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class StepOutput:
    """One request's output for one engine step, with the logprobs of just its new tokens."""
    output: RequestOutput
    delta_logprobs: list[Logprob] | None


@dataclass(slots=True)
class EngineFailure:
    """The request can no longer finish normally (engine error, or the server shutting down)."""
    request_id: str
    message: str
    status: int = 500


class AsyncEngine:
    def __init__(self, engine):
        self.engine = engine
        self._cond = threading.Condition()
        self._commands: deque = deque()
        self._queues: dict[str, asyncio.Queue] = {}   # loop thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.num_steps = 0

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="specdec-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ---- loop side --------------------------------------------------------------------
    @property
    def num_active(self) -> int:
        """Engine requests the HTTP side still waits on."""
        return len(self._queues)

    async def add(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
                  prompt: str | None, queue: asyncio.Queue) -> None:
        """Queue a request; returns once the engine accepted it. Bad input raises ValueError
        here, before any response is sent. Outputs arrive on `queue` as StepOutput / EngineFailure."""
        self._queues[request_id] = queue
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._submit(("add", request_id, prompt_ids, params, prompt, done))
        try:
            await asyncio.wrap_future(done)
        except BaseException:
            # also on cancellation (client gone while the add was queued): the add may have
            # happened, and an abort queued after it frees the blocks; otherwise it is a no-op
            self._queues.pop(request_id, None)
            self._submit(("abort", request_id))
            raise

    def abort(self, request_id: str) -> None:
        """Stop a request and free its blocks (a no-op if it already finished)."""
        if self._queues.pop(request_id, None) is not None:
            self._submit(("abort", request_id))

    def fail_all(self, message: str, status: int = 503) -> None:
        """Abort every request; each waiting consumer gets an EngineFailure (used at shutdown)."""
        for rid, queue in list(self._queues.items()):
            queue.put_nowait(EngineFailure(rid, message, status))
            self.abort(rid)

    def stats(self) -> dict:
        """Engine-wide numbers for /health and /metrics (plain reads of ints; safe under the GIL)."""
        e = self.engine
        bm = e.block_manager
        return {"num_running": len(e.scheduler.running), "num_waiting": len(e.scheduler.waiting),
                "kv_blocks_total": bm.num_blocks, "kv_blocks_in_use": bm.num_blocks - bm.num_free_blocks,
                "num_active_requests": self.num_active, "num_steps": self.num_steps}

    def _dispatch(self, items: list) -> None:
        for item in items:
            rid = item.request_id if isinstance(item, EngineFailure) else item.output.request_id
            queue = self._queues.get(rid)
            if queue is None:
                continue                      # aborted meanwhile
            queue.put_nowait(item)
            if isinstance(item, EngineFailure) or item.output.finished:
                self._queues.pop(rid, None)

    # ---- engine thread -------------------------------------------------------------------
    def _submit(self, command: tuple) -> None:
        with self._cond:
            self._commands.append(command)
            self._cond.notify()

    def _run(self) -> None:
        engine, busy = self.engine, False
        while True:
            with self._cond:
                while not self._commands and not busy and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                commands = list(self._commands)
                self._commands.clear()
            for command in commands:
                self._apply(command)
            if engine.has_unfinished_requests():
                items = self._step()
                if items:
                    self._loop.call_soon_threadsafe(self._dispatch, items)
            busy = engine.has_unfinished_requests()

    def _apply(self, command: tuple) -> None:
        if command[0] == "abort":
            self.engine.abort_request(command[1])
            return
        _, rid, ids, params, prompt, done = command
        try:
            self.engine.add_request(rid, ids, params, prompt=prompt)
        except Exception as e:     # ValueError for bad input; anything else is reported the same way
            done.set_exception(e)
        else:
            done.set_result(None)

    def _step(self) -> list:
        try:
            outputs = self.engine.step()
        except Exception as e:
            # one failing step must not take the server down: fail its requests, free their blocks
            logger.exception("engine step failed")
            rids = list(getattr(self.engine, "requests", {}).keys())
            for rid in rids:
                self.engine.abort_request(rid)
            return [EngineFailure(rid, f"engine error: {type(e).__name__}: {e}", 500) for rid in rids]
        self.num_steps += 1
        items = []
        for out in outputs:
            c = out.outputs[0]
            lp = None
            if c.logprobs is not None:
                end = len(c.token_ids)   # slice now: the engine keeps appending to this list
                lp = c.logprobs[end - len(c.delta_token_ids):end]
            items.append(StepOutput(out, lp))
        return items
