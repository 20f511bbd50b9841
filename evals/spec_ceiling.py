"""What speculation can buy on this machine: decode speed of fixed draft shapes against plain.

    python -m evals.spec_ceiling [--num-prompts 10] [--max-tokens 96] [--threads 2] [--out DIR]

Every shape drafts its whole tree every step (`"adaptive": False`, so nothing depends on a
policy), on the same MT-bench turn-1 prompts, batch 1, greedy; each output is checked equal
to plain decoding. Per shape, in the steady state (the prefill and the first decode step,
which holds EAGLE's one-off catch-up over the prompt, left out): tau (tokens per target
forward incl. the bonus token), ms per step (drafting + the verify forward + acceptance),
decode tok/s and its ratio to plain.

Then the question the issue's 1.8x asks: per chain depth k, the step cost r_k (x a plain
step) is measured, so a speedup s needs tau >= s * r_k; with a top-1 acceptance `a` per
depth (geometric: tau = 1 + a + ... + a^k) that is the `a` printed as "a needed", next to
the head's measured first-depth acceptance.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from evals import report
from specdec.speculative import DEFAULT_SPECULATIVE_CONFIG

CHAIN_DEPTHS = (1, 2, 3, 4, 6)
SHAPES = [("plain", None)] + [
    (f"eagle chain {k}", {"method": "eagle", "num_speculative_tokens": k, "tree_width": 1, "adaptive": False})
    for k in CHAIN_DEPTHS
] + [
    ("eagle tree 2x2", {"method": "eagle", "num_speculative_tokens": 2, "tree_width": 2, "adaptive": False}),
    ("eagle tree 3x4", {"method": "eagle", "num_speculative_tokens": 3, "tree_width": 4, "adaptive": False}),
    ("eagle tree 7x9", {"method": "eagle", "num_speculative_tokens": 7, "tree_width": 9, "adaptive": False}),
    ("hybrid 3x4", {"method": "hybrid", "num_speculative_tokens": 3, "tree_width": 4, "adaptive": False}),
    ("hybrid 7x9", {"method": "hybrid", "num_speculative_tokens": 7, "tree_width": 9, "adaptive": False}),
    ("ngram chain 4", {"method": "ngram", "num_speculative_tokens": 4, "adaptive": False}),
    ("hybrid, cost-aware", {"method": "hybrid"}),
    ("default (ngram, cost-aware)", dict(DEFAULT_SPECULATIVE_CONFIG)),
]


def acceptance_needed(tau: float, k: int) -> float | None:
    """The per-depth acceptance a with 1 + a + ... + a^k = tau (None if tau > k + 1)."""
    if tau > k + 1:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(60):
        a = (lo + hi) / 2
        if sum(a ** i for i in range(k + 1)) < tau:
            lo = a
        else:
            hi = a
    return (lo + hi) / 2


def run_shape(name: str, config, questions: list, max_tokens: int, threads: int) -> dict:
    from evals.datasets import chat_token_ids
    from specdec import LLM, SamplingParams
    llm = LLM(num_threads=threads, speculative_config=config)
    prompts = [chat_token_ids(llm.tokenizer, q) for q in questions]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    llm.generate(prompt_token_ids=[prompts[0]], sampling_params=SamplingParams(temperature=0.0, max_tokens=16))
    outs, decode_s, decode_tokens, steps = [], 0.0, 0, 0
    acc, drafted = [], []
    for ids in prompts:
        o = llm.generate(prompt_token_ids=[ids], sampling_params=params)[0]
        m = o.metrics
        # steady state: from the end of the first decode step (which also holds EAGLE's one-off
        # catch-up over the prompt) to the last token; times are per step (shared by its tokens)
        t = m.token_times
        first_decode = t[1]
        skipped = 1 + sum(1 for x in t[1:] if x == first_decode)
        decode_s += t[-1] - first_decode
        decode_tokens += len(t) - skipped
        steps += m.num_forwards - 2
        for i, (a, d) in enumerate(zip(m.accepted_per_depth, m.drafted_per_depth)):
            if i >= len(acc):
                acc.append(0)
                drafted.append(0)
            acc[i] += a
            drafted[i] += d
        outs.append(list(o.outputs[0].token_ids))
    del llm
    return {"name": name, "config": config, "outputs": outs, "decode_seconds": decode_s,
            "decode_tokens": decode_tokens, "steps": steps, "tau": decode_tokens / steps,
            "ms_per_step": 1e3 * decode_s / steps, "tok_s": decode_tokens / decode_s,
            "acceptance_per_depth": [a / d if d else 0.0 for a, d in zip(acc, drafted)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-prompts", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target", type=float, default=1.8, help="speedup over plain to solve for")
    p.add_argument("--shapes", nargs="*", help="only shapes whose name contains one of these (plain always runs)")
    p.add_argument("--out", help="write <out>/spec_ceiling.{json,md}")
    args = p.parse_args()
    import torch

    from evals.datasets import load_prompts
    torch.set_num_threads(args.threads)
    rows = []
    shapes = [s for s in SHAPES if s[1] is None or not args.shapes or any(k in s[0] for k in args.shapes)]
    questions = load_prompts("mtbench", args.num_prompts)
    load = [os.getloadavg()[0]]
    for name, config in shapes:
        r = run_shape(name, config, questions, args.max_tokens, args.threads)
        rows.append(r)
        print(f"{name}: tau {r['tau']:.2f}, {r['ms_per_step']:.1f} ms/step, {r['tok_s']:.1f} tok/s", flush=True)
    load.append(os.getloadavg()[0])
    plain = rows[0]
    lines = _report(rows, plain, args, load)
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for r in rows:
            r["equal_to_plain"] = sum(a == b for a, b in zip(r["outputs"], plain["outputs"]))
        for r in rows:
            r.pop("outputs")
        meta = report.machine_info({"threads": args.threads, "num_prompts": args.num_prompts,
                                    "max_tokens": args.max_tokens, "loadavg_1m_at_start": round(load[0], 2)})
        (out / "spec_ceiling.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        (out / "spec_ceiling.md").write_text("\n".join([report.machine_block(meta), ""] + lines) + "\n")


def _report(rows: list[dict], plain: dict, args, load: list[float]) -> list[str]:
    lines = [f"# Fixed draft shapes vs plain decoding (MT-bench turn 1, {args.num_prompts} prompts x "
             f"{args.max_tokens} tokens, batch 1, greedy, {args.threads} threads; load {load[0]:.2f} -> {load[1]:.2f})",
             "", "| shape | = plain | tau | acceptance per depth | ms / step | x plain step | tok/s | x plain |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same = sum(a == b for a, b in zip(r["outputs"], plain["outputs"]))
        accs = " / ".join(f"{a:.2f}" for a in r["acceptance_per_depth"][:7]) or "-"
        lines.append(f"| {r['name']} | {same}/{len(plain['outputs'])} | {r['tau']:.2f} | {accs} | "
                     f"{r['ms_per_step']:.2f} | {r['ms_per_step'] / plain['ms_per_step']:.2f} | {r['tok_s']:.1f} | "
                     f"{r['tok_s'] / plain['tok_s']:.2f} |")
    chains = [r for r in rows if r["name"].startswith("eagle chain ")]
    if chains:
        lines += ["", f"## What {args.target}x plain would need of a chain draft on this machine", "",
                  "| chain depth k | step cost r_k (x plain) | tau needed = {0} x r_k | a needed (1 + a + .. + a^k) "
                  "| measured tau | measured depth-1 acceptance |".format(args.target), "|---|---|---|---|---|---|"]
        for r in chains:
            k = int(r["name"].split()[-1])
            ratio = r["ms_per_step"] / plain["ms_per_step"]
            need = args.target * ratio
            a = acceptance_needed(need, k)
            a_txt = f"{a:.2f}" if a is not None else f"impossible (> {k + 1})"
            first = r["acceptance_per_depth"][0] if r["acceptance_per_depth"] else 0.0
            lines.append(f"| {k} | {ratio:.2f} | {need:.2f} | {a_txt} | {r['tau']:.2f} | {first:.2f} |")
    return lines


if __name__ == "__main__":
    main()
