"""Where a decode token's time goes: torch.profiler over plain batch-1 decoding.

    python -m evals.profile_step [--tokens 64] [--threads 1] [--quantization auto|none] [--out DIR]

Prints ms per token in matmuls / attention / everything else (self CPU time of the aten ops
and of the fused specdec:: C++ ops, classified by name), op calls per token, and the wall
time per token (which also counts the Python between ops: `untracked`). Runs against whatever `specdec` is importable, so the same script
profiles an older checkout: `PYTHONPATH=<old checkout> python <this file>`.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

MATMUL = ("_weight_int4pack_mm", "_weight_int8pack_mm", "aten::mm", "aten::addmm", "aten::linear",
          "specdec::q8_linear")
ATTENTION = ("aten::bmm", "scaled_dot_product", "flash_attention", "aten::softmax", "aten::_softmax",
             "specdec::row_attention")


def classify(name: str) -> str:
    if any(k in name for k in MATMUL):
        return "matmul"
    if any(k in name for k in ATTENTION):
        return "attention"
    return "other"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quantization", default="auto", choices=["auto", "none"])
    p.add_argument("--label", default="")
    p.add_argument("--out", help="write <out>/profile_step<label>.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from torch.profiler import ProfilerActivity, profile

    from specdec import LLM, SamplingParams
    # num_threads pins the engine's thread count (its ThreadGuard would pick one otherwise)
    kw = {"num_threads": args.threads}
    if args.quantization != "auto":
        kw.update(quantization=None, dtype="float32")
    try:
        llm = LLM(**kw)
    except TypeError:                      # an older checkout without `quantization`
        llm = LLM(dtype="float32")
    params = SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True)
    conv = [{"role": "user", "content": "Explain what a KV cache is in two paragraphs."}]
    llm.chat(conv, params)                 # warm-up
    t0 = time.perf_counter()
    llm.chat(conv, params)
    wall = (time.perf_counter() - t0) / args.tokens
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        llm.chat(conv, params)
    ms = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    calls = 0
    for ev in prof.key_averages():
        if not ev.key.startswith(("aten::", "specdec::")):   # specdec:: = the fused C++ ops
            continue
        ms[classify(ev.key)] += ev.self_cpu_time_total / 1e3 / args.tokens
        calls += ev.count
    result = {"label": args.label, "threads": args.threads, "quantization": args.quantization,
              "loadavg_1m": round(os.getloadavg()[0], 2), "wall_ms_per_token": round(wall * 1e3, 2),
              **{f"{k}_ms_per_token": round(v, 2) for k, v in ms.items()},
              "untracked_ms_per_token": round(wall * 1e3 - sum(ms.values()), 2),   # Python, engine
              "op_calls_per_token": round(calls / args.tokens, 1)}
    print(json.dumps(result, indent=1))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"profile_step{args.label}.json"), "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
