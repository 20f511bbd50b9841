"""Bounded fuzz of the server's OpenAPI schema with schemathesis: no 5xx, no hang.

    python -m evals.api_fuzz                       # tiny random model in-process, ~2,400 requests
    python -m evals.api_fuzz --examples 50 --url http://127.0.0.1:8000   # against a running server

Every operation of /openapi.json gets `--examples` valid (positive) and as many
invalid (negative) generated requests. A response >= 500, or no response
within `--request-timeout`, is a finding. The run is bounded by the example
count and `--max-time`. Loopback only.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from dataclasses import dataclass, field

import requests

LOOPBACK = ("http://127.0.0.1", "http://localhost")


@dataclass
class FuzzReport:
    num_requests: int = 0
    by_status: collections.Counter = field(default_factory=collections.Counter)
    findings: list[str] = field(default_factory=list)     # 5xx and hangs, with a curl-like repro
    seconds: float = 0.0
    kv_blocks_in_use_after: int | None = None   # once the server is idle again (in-process runs)

    @property
    def num_server_errors(self) -> int:
        return sum(n for s, n in self.by_status.items() if isinstance(s, int) and s >= 500)

    def as_dict(self) -> dict:
        return {"num_requests": self.num_requests, "seconds": round(self.seconds, 1),
                "by_status": {str(k): v for k, v in sorted(self.by_status.items(), key=str)},
                "num_server_errors": self.num_server_errors, "kv_blocks_in_use_after": self.kv_blocks_in_use_after,
                "findings": self.findings[:20]}


def run_fuzz(base_url: str, examples: int, seed: int = 0, max_time: float = 600.0,
             request_timeout: float = 30.0, headers: dict | None = None) -> FuzzReport:
    """Fuzz every operation at `base_url` (loopback). Returns counts; never raises on findings."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, seed as hyp_seed, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    if not base_url.startswith(LOOPBACK):
        raise ValueError("the fuzzer only targets loopback addresses")
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    report, t0 = FuzzReport(), time.monotonic()
    session = requests.Session()
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if time.monotonic() - t0 > max_time:
                break

            @hyp_seed(seed)
            @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def one(case):
                if time.monotonic() - t0 > max_time:
                    return
                report.num_requests += 1
                try:
                    resp = case.call(base_url=base_url, session=session, headers=headers, timeout=request_timeout)
                except requests.Timeout:
                    report.by_status["timeout"] += 1
                    report.findings.append(f"HANG {op.label}: {case.as_curl_command()}"[:2000])
                    return
                except requests.ConnectionError as e:
                    report.by_status["connection_error"] += 1
                    report.findings.append(f"CONNECTION {op.label}: {e}"[:500])
                    return
                report.by_status[resp.status_code] += 1
                if resp.status_code >= 500:
                    report.findings.append(f"{resp.status_code} {op.label}: {resp.text[:300]} | "
                                           f"{case.as_curl_command()}"[:2000])

            try:
                one()
            except Unsatisfiable:      # e.g. no invalid request exists for a parameterless GET
                continue
    report.seconds = time.monotonic() - t0
    return report


def tiny_server(tmpdir: str):
    """A tiny random-weight model with the bundled tokenizer, served in a thread with small limits."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from server import ServerSettings, build_app
    from specdec import LLM
    from specdec.loader import bundled_model_path
    from server.threaded import ThreadServer

    d, f = os.path.split(bundled_model_path())
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmpdir, safe_serialization=True)
    tok.save_pretrained(tmpdir)
    llm = LLM(model=tmpdir, dtype="float32", num_kv_blocks=256,
              speculative_config={"method": "ngram", "num_speculative_tokens": 3})
    return ThreadServer(build_app(llm, fuzz_settings()))


def fuzz_settings():
    from server import ServerSettings
    # small generations keep thousands of requests within minutes; limits are what is fuzzed
    return ServerSettings(served_model_name="tiny", max_tokens_limit=16, default_max_tokens=8, max_n=4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.api_fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running server (loopback); default: start a tiny one")
    p.add_argument("--examples", type=int, default=300, help="generated requests per operation and mode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-time", type=float, default=900.0)
    p.add_argument("--request-timeout", type=float, default=30.0)
    p.add_argument("--out", default=None, help="write the report as JSON here")
    a = p.parse_args(argv)
    if a.url:
        report = run_fuzz(a.url, a.examples, a.seed, a.max_time, a.request_timeout)
    else:
        import tempfile
        with tempfile.TemporaryDirectory() as tmp, tiny_server(tmp) as srv:
            report = run_fuzz(srv.url, a.examples, a.seed, a.max_time, a.request_timeout)
            report.kv_blocks_in_use_after = srv.wait_idle()["kv_blocks_in_use"]
    text = json.dumps(report.as_dict(), indent=2)
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 1 if report.findings or report.kv_blocks_in_use_after else 0


if __name__ == "__main__":
    sys.exit(main())
