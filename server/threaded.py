"""Serve an app in a background thread on a free loopback port (tests, notebooks, evals).

    with ThreadServer(build_app(engine, ServerSettings())) as srv:
        client = srv.openai_client()          # official client, max_retries=0

No signal handling in a thread: leaving the `with` block stops uvicorn, and the
app's lifespan stops the engine thread.
"""
from __future__ import annotations

import socket
import threading
import time

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float, proc=None) -> None:
    """Poll GET /health until 200; fail early if `proc` (a Popen) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


class ThreadServer:
    def __init__(self, app, port: int | None = None):
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        wait_healthy(self.url, 60)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def openai_client(self, api_key: str = "none", **kw):
        import openai
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120, **kw)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=5).json()

    def wait_idle(self, timeout: float = 20) -> dict:
        """Until no request holds KV blocks or waits in the engine; returns the last /health body."""
        deadline = time.monotonic() + timeout
        while True:
            h = self.health()
            if (h["kv_blocks_in_use"] == 0 and h["num_active_requests"] == 0 and h["num_running"] == 0
                    and h["num_waiting"] == 0) or time.monotonic() > deadline:
                return h
            time.sleep(0.1)
