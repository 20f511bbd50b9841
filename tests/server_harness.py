"""Start the server for tests: in a thread (server.threaded.ThreadServer, any engine object) or
as a `specdec serve` subprocess (ProcessServer, for signals and exit codes)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from server.threaded import ThreadServer, free_port, wait_healthy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
__all__ = ["ThreadServer", "ProcessServer", "free_port"]


class ProcessServer:
    """`python -m specdec.cli serve ...` on a free loopback port, with this worktree on PYTHONPATH."""

    def __init__(self, args: list[str], port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "specdec.cli", "serve", *args, "--port", str(self.port),
                                      "--log-level", "warning"], env=env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def __enter__(self) -> "ProcessServer":
        try:
            wait_healthy(self.url, 120, self.proc)
        except Exception:
            self.kill()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def openai_client(self, **kw):
        import openai
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="none", max_retries=0, timeout=120, **kw)
