"""Load test: N concurrent streaming clients against the server on loopback.

    python -m evals.load                                   # starts `specdec serve` (bundled model), N = 1, 8, 32
    python -m evals.load --concurrency 8 --url http://127.0.0.1:8000   # an already running server

Each client sends streaming chat requests one after another (the run has a
fixed total per level: `--requests-per-client` x N) with
`stream_options.include_usage`; a share `--disconnect-share` of the requests
drop the connection after a few chunks. Per level: requests/s, TTFT / ITL /
TPOT / e2e p50 and p99, output tokens per SSE chunk, errors (non-200, error
events, missing [DONE], transport errors), KV blocks still in use once the
server is idle, and the server's RSS before and after. Everything is bounded
by the request count and `--max-time`. Loopback only. Meanwhile a probe
times GET /health every 100 ms: the event loop never waits on a model step,
so it should stay far below a step's duration.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import httpx

LOOPBACK = ("http://127.0.0.1", "http://localhost")
PROMPTS = ["Explain what a KV cache is in two sentences.", "Write a haiku about the sea.",
           "List five fruits, one per line.", "What is speculative decoding?",
           "Count from 1 to 20, separated by commas.", "Give three tips for writing clear code.",
           "Translate 'good morning' to French, Spanish and German.", "Describe a cat to someone who never saw one."]


@dataclass
class RequestRecord:
    ok: bool = False
    disconnected: bool = False
    error: str | None = None
    ttft: float | None = None
    e2e: float | None = None
    chunk_times: list[float] = field(default_factory=list)   # content chunks, seconds since send
    completion_tokens: int = 0


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int,
                      disconnect_after: int | None) -> RequestRecord:
    rec = RequestRecord()
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                rec.error = f"status {resp.status_code}: {(await resp.aread())[:200]!r}"
                return rec
            done = False
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                msg = json.loads(data)
                if "error" in msg:
                    rec.error = f"error event: {msg['error'].get('message')}"
                    return rec
                if msg.get("usage"):
                    rec.completion_tokens = msg["usage"]["completion_tokens"]
                if msg.get("choices") and msg["choices"][0]["delta"].get("content"):
                    rec.chunk_times.append(time.perf_counter() - t0)
                    if disconnect_after is not None and len(rec.chunk_times) >= disconnect_after:
                        rec.disconnected = True
                        return rec           # leaving the `async with` closes the connection
            rec.e2e = time.perf_counter() - t0
            if not done:
                rec.error = "stream ended without [DONE]"
                return rec
            rec.ok = True
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        rec.error = f"{type(e).__name__}: {e}"
    finally:
        rec.ttft = rec.chunk_times[0] if rec.chunk_times else None
    return rec


async def run_level(url: str, concurrency: int, num_requests: int, max_tokens: int, disconnect_share: float,
                    max_time: float, seed: int) -> tuple[list[RequestRecord], float, list[float]]:
    rng = random.Random(seed)
    plan = [(PROMPTS[i % len(PROMPTS)], rng.randint(1, 3) if rng.random() < disconnect_share else None)
            for i in range(num_requests)]
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    records: list[RequestRecord] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits) as client:
        async def worker():
            while not queue.empty():
                prompt, disconnect_after = queue.get_nowait()
                records.append(await one_request(client, url, prompt, max_tokens, disconnect_after))

        health_ms: list[float] = []

        async def probe():
            # the event loop must never wait on a model step: /health stays fast while the engine is busy
            async with httpx.AsyncClient(timeout=30) as c:
                while True:
                    t = time.perf_counter()
                    await c.get(f"{url}/health")
                    health_ms.append((time.perf_counter() - t) * 1000)
                    await asyncio.sleep(0.1)

        t0 = time.perf_counter()
        prober = asyncio.ensure_future(probe())
        try:
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), max_time)
        except asyncio.TimeoutError:
            records.append(RequestRecord(error=f"level timed out after {max_time}s"))
        finally:
            prober.cancel()
        wall = time.perf_counter() - t0
    return records, wall, health_ms


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summarize(records: list[RequestRecord], wall: float) -> dict:
    done = [r for r in records if r.ok]
    ttft = [r.ttft for r in records if r.ttft is not None]
    itl = [b - a for r in records for a, b in zip(r.chunk_times, r.chunk_times[1:])]
    tpot = [(r.e2e - r.ttft) / (r.completion_tokens - 1) for r in done
            if r.completion_tokens > 1 and r.ttft is not None]
    e2e = [r.e2e for r in done]
    toks = sum(r.completion_tokens for r in done)
    chunks = sum(len(r.chunk_times) for r in done)
    ms = lambda xs, q: None if pct(xs, q) is None else round(pct(xs, q) * 1000, 1)  # noqa: E731
    return {
        "requests": len(records), "completed": len(done), "disconnected": sum(r.disconnected for r in records),
        "errors": sum(r.error is not None for r in records),
        "error_samples": sorted({r.error for r in records if r.error})[:5],
        "wall_s": round(wall, 2), "requests_per_s": round(len(done) / wall, 3) if wall else None,
        "output_tok_per_s": round(toks / wall, 1) if wall else None,
        "ttft_ms_p50": ms(ttft, 50), "ttft_ms_p99": ms(ttft, 99),
        "itl_ms_p50": ms(itl, 50), "itl_ms_p99": ms(itl, 99),
        "tpot_ms_p50": ms(tpot, 50), "tpot_ms_p99": ms(tpot, 99),
        "e2e_s_p50": None if not e2e else round(pct(e2e, 50), 2), "e2e_s_p99": None if not e2e else round(pct(e2e, 99), 2),
        "tokens_per_chunk": round(toks / chunks, 2) if chunks else None,
        "tokens_per_chunk_mean_of_requests": round(statistics.mean(
            r.completion_tokens / len(r.chunk_times) for r in done if r.chunk_times), 2) if done else None,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def server_rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    import psutil
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def wait_idle(url: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        h = httpx.get(f"{url}/health", timeout=5).json()
        if (h["kv_blocks_in_use"] == 0 and h["num_active_requests"] == 0) or time.monotonic() > deadline:
            return h
        time.sleep(0.2)


def start_server(args: list[str], port: int) -> subprocess.Popen:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.Popen([sys.executable, "-m", "specdec.cli", "serve", *args, "--port", str(port),
                             "--log-level", "warning"], env=env, cwd=root)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError("server did not start")


def to_markdown(meta: dict, rows: list[dict]) -> str:
    cols = ["concurrency", "requests", "completed", "disconnected", "errors", "requests_per_s", "output_tok_per_s",
            "ttft_ms_p50", "ttft_ms_p99", "itl_ms_p50", "itl_ms_p99", "tpot_ms_p50", "tpot_ms_p99",
            "e2e_s_p50", "e2e_s_p99", "tokens_per_chunk", "kv_blocks_in_use_after", "health_ms_p50", "health_ms_p99", "rss_mb_before",
            "rss_mb_after"]
    lines = ["# Server load test", "", "## Settings", ""] + [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "## Results", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c)) for c in cols) + " |" for r in rows]
    errs = [e for r in rows for e in r["error_samples"]]
    lines += ["", "Errors: " + ("none" if not errs else "; ".join(errs)), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running server on loopback (default: start `specdec serve`)")
    p.add_argument("--server-args", default="", help="extra `specdec serve` arguments when starting one")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--disconnect-share", type=float, default=0.2)
    p.add_argument("--max-time", type=float, default=600.0, help="per level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="results folder (writes load.json and load.md)")
    a = p.parse_args(argv)
    proc = None
    if a.url is None:
        from server.threaded import free_port
        port = free_port()
        proc = start_server(a.server_args.split(), port)
        url = f"http://127.0.0.1:{port}"
    else:
        url = a.url.rstrip("/")
        if not url.startswith(LOOPBACK):
            raise SystemExit("evals.load only targets loopback addresses")
    pid = proc.pid if proc else None
    rows = []
    try:
        # warm-up: first-request costs (allocations, caches) stay out of the numbers
        asyncio.run(run_level(url, 1, 1, a.max_tokens, 0.0, a.max_time, a.seed))
        for n in [int(x) for x in a.concurrency.split(",")]:
            rss_before = server_rss_mb(pid)
            records, wall, health_ms = asyncio.run(run_level(url, n, n * a.requests_per_client, a.max_tokens,
                                                             a.disconnect_share, a.max_time, a.seed + n))
            idle = wait_idle(url)
            row = {"concurrency": n, **summarize(records, wall), "kv_blocks_in_use_after": idle["kv_blocks_in_use"],
                   "health_ms_p50": _round(pct(health_ms, 50)), "health_ms_p99": _round(pct(health_ms, 99)),
                   "rss_mb_before": rss_before, "rss_mb_after": server_rss_mb(pid)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "url": "started `specdec serve " + a.server_args + "`"
            if a.url is None else url, "cpu_cores": os.cpu_count(), "loadavg_1m_at_end": os.getloadavg()[0],
            "max_tokens": a.max_tokens, "temperature": 0, "requests_per_client": a.requests_per_client,
            "disconnect_share": a.disconnect_share, "server_exit_code": proc.returncode if proc else None,
            "command": "python -m evals.load " + " ".join(argv if argv is not None else sys.argv[1:])}
    md = to_markdown(meta, rows)
    print(md)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "load.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
        with open(os.path.join(a.out, "load.md"), "w") as f:
            f.write(md)
    bad = any(r["errors"] or r["kv_blocks_in_use_after"] for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
