"""serve(): uvicorn with a draining SIGTERM.

uvicorn alone stops listening and re-raises SIGTERM after shutdown (exit code
-15), and sse-starlette 3.7 patches uvicorn so SIGTERM cuts every SSE stream.
Here SIGTERM (or Ctrl-C) instead: marks the server draining (new requests and
/health get 503), lets in-flight requests finish for up to `shutdown_timeout`
seconds, ends the rest with an SSE error event + [DONE], then shuts uvicorn
down and returns normally (exit 0). A second signal skips the wait.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time

import uvicorn
from sse_starlette.sse import AppStatus

from server.app import build_app
from server.settings import ServerSettings

logger = logging.getLogger(__name__)
FLUSH_SECONDS = 2.0   # after the drain deadline: time for the error events of aborted streams to go out


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state):
        super().__init__(config)
        self.state = state
        self._drain_task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._skip_wait = False

    async def serve(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)
        # unlike uvicorn, the signal is not raised again: a drained shutdown is a clean exit

    def _on_signal(self, sig, frame) -> None:
        if self._loop is None:
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        if self._drain_task is not None:
            logger.warning("second signal: ending in-flight requests now")
            self._skip_wait = True
            return
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        state = self.state
        state.draining = True
        timeout = state.settings.shutdown_timeout
        logger.info("shutting down: %d requests in flight, waiting up to %.0fs", state.num_in_flight, timeout)
        deadline = time.monotonic() + timeout
        while state.num_in_flight > 0 and time.monotonic() < deadline and not self._skip_wait:
            await asyncio.sleep(0.05)
        if state.num_in_flight > 0:
            logger.warning("drain deadline: aborting %d requests", state.num_in_flight)
            state.engine.fail_all("the server is shutting down", 503)
            flush_deadline = time.monotonic() + FLUSH_SECONDS
            while state.num_in_flight > 0 and time.monotonic() < flush_deadline:
                await asyncio.sleep(0.05)
        self.should_exit = True


def serve(engine, settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Serve `engine` until SIGTERM / Ctrl-C; returns after a clean drain."""
    # our drain decides when streams end. Our own signal handler already bypasses sse-starlette's
    # patched `Server.handle_exit`; this also stops its watcher from cancelling streams when it sees
    # uvicorn's `should_exit` (which we set only once the drain is over)
    AppStatus.disable_automatic_graceful_drain()
    app = build_app(engine, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=int(FLUSH_SECONDS) + 3, access_log=False)
    DrainingServer(config, app.state.server).run()
