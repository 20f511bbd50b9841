"""Accuracy of the quantized fast path against the fp32 dequantized reference.

    python -m evals.quant_quality [--num-prompts 16] [--max-tokens 256] [--out DIR]

Both engines load the bundled GGUF: the reference dequantizes every tensor to fp32
(`quantization=None`, exact against HF transformers), the fast path keeps the Q4_1 / Q8_0
tensors quantized (the default). Reported: max and mean |logit difference| at the last prompt
token of each prompt (same prefill input), and greedy agreement: for each prompt, the number
of leading tokens the two greedy continuations share (of --max-tokens, EOS ignored).
"""
from __future__ import annotations

import argparse
import os

import torch

from evals import datasets, report
from evals.harness import log


def last_logits(llm, ids: list[int]) -> torch.Tensor:
    """Logits [V] fp32 of the last prompt token (one prefill forward)."""
    from specdec.model_runner import build_step_inputs
    from specdec.request import Request
    from specdec.sampling_params import SamplingParams
    from specdec.scheduler import ScheduledRequest, SchedulerOutput
    eng = llm.engine
    req = Request("quality", ids, SamplingParams(), eng.eos_token_ids)
    assert eng.block_manager.allocate(req, len(ids))
    try:
        batch = SchedulerOutput([ScheduledRequest(req, len(ids))])
        return eng.runner.forward(build_step_inputs(batch, [None], eng.config.block_size, "cpu"))[0]
    finally:
        eng.block_manager.free(req)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="results folder (default evals/results/<date>-<host>)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from specdec import LLM, SamplingParams
    load_start = round(os.getloadavg()[0], 2)
    ref = LLM(dtype="float32", quantization=None, num_threads=args.threads)
    fast = LLM(num_threads=args.threads)
    per = args.num_prompts // 2
    prompts = datasets.load_prompts("mtbench", per) + datasets.load_prompts("humaneval", args.num_prompts - per)
    ids = [datasets.chat_token_ids(ref.tokenizer, q) for q in prompts]
    diffs, agree, argmax_same = [], [], 0
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    for i, x in enumerate(ids):
        a, b = last_logits(ref, x), last_logits(fast, x)
        d = (a - b).abs()
        diffs.append((d.max().item(), d.mean().item()))
        argmax_same += int(a.argmax() == b.argmax())
        ta = ref.generate(prompt_token_ids=[x], sampling_params=params)[0].outputs[0].token_ids
        tb = fast.generate(prompt_token_ids=[x], sampling_params=params)[0].outputs[0].token_ids
        n = next((k for k, (u, v) in enumerate(zip(ta, tb)) if u != v), min(len(ta), len(tb)))
        agree.append(n)
        log(f"prompt {i}: max|d| {d.max():.3f} mean|d| {d.mean():.4f}, greedy agree {n}/{args.max_tokens}")
    summary = {
        "prompts": len(ids), "max_tokens": args.max_tokens,
        "logit_abs_diff_max": max(m for m, _ in diffs),
        "logit_abs_diff_mean": sum(m for _, m in diffs) / len(diffs),
        "last_token_argmax_agreement": argmax_same / len(ids),
        "greedy_leading_agreement_mean_tokens": sum(agree) / len(agree),
        "greedy_identical_prompts": sum(a == args.max_tokens for a in agree),
        "weight_bytes_reference": ref.engine.model.weight_bytes,
        "weight_bytes_fast": fast.engine.model.weight_bytes,
    }
    settings = {"threads": args.threads, "loadavg_1m_at_start": load_start}
    machine = report.machine_info(settings)
    out = report.output_dir(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [[k, report.fmt(v, 4) if isinstance(v, float) else str(v)] for k, v in summary.items()]
    report.write_report(out, "quant_quality", "Quantized fast path vs fp32 dequantized reference", machine,
                        [("Summary", report.markdown_table(["metric", "value"], rows))],
                        notes=[f"command: python -m evals.quant_quality --num-prompts {args.num_prompts} "
                               f"--max-tokens {args.max_tokens} --threads {args.threads}"],
                        raw={"summary": summary, "per_prompt": {"logit_diffs": diffs, "agree": agree}},
                        plots=[])
    print(report.markdown_table(["metric", "value"], rows))


if __name__ == "__main__":
    main()
