"""Batch-1 latency, side by side: python -m evals.latency [--quick] [--dtype ...]

Rows: specdec plain, specdec + each speculator (evals/speculators.py), HF
generate, HF assisted generation (prompt lookup; draft model with
--draft-model), llama.cpp plain and prompt lookup (when installed). Every row
gets the same prompt ids, greedy decoding and exactly --max-tokens output
tokens (EOS does not stop a request, see README "Fixed length").
"""
from __future__ import annotations

from evals import cli, report, stats
from evals.harness import FAIL, PLAIN, Row, match_cell, run_rows
from evals.speculators import resolve
from evals.systems import HF_GENERATE, LLAMACPP, hf_specs, llamacpp_specs, specdec_specs

FAMILIES = ("specdec", "hf", "llama.cpp")
HEADERS = ["system", "check", "= plain", "tokens", "TTFT ms p50/p90/p99", "TPOT ms p50/p90/p99",
           "ITL ms p50/p90/p99", "e2e s p50/p90/p99", "tok/s", "tau", "x HF", "x llama.cpp"]


def _triple(summary: dict, name: str, scale: float, digits: int) -> str:
    return " / ".join(report.fmt(summary[f"{name}_p{q}"] * scale, digits) for q in stats.PERCENTILES)


def row_summary(row: Row) -> dict:
    """Aggregated numbers of one row (also for FAIL rows: the JSON keeps them)."""
    s = stats.summarize([g.latency for g in row.generations])
    forwards = [g.num_forwards for g in row.generations]
    tokens = sum(len(g.token_ids) for g in row.generations)
    s["tau"] = stats.tau(tokens, sum(forwards)) if all(forwards) else None
    s["mean_tokens"] = tokens / len(row.generations)
    s["cached_prompt_tokens"] = sum(g.num_cached_prompt_tokens for g in row.generations)
    return s


def table(rows: list[Row]) -> str:
    summaries = {r.system: row_summary(r) for r in rows if r.has_numbers}
    base_hf = summaries.get(HF_GENERATE, {}).get("output_tok_s")
    base_llama = summaries.get(LLAMACPP, {}).get("output_tok_s")
    lines = []
    for r in rows:
        head = [r.system, r.status, match_cell(r)]
        if r.system not in summaries:
            # A FAIL row posts no number: a fast wrong engine must not look good.
            filler = "FAIL" if r.status == FAIL else "-"
            lines.append(head + ["-"] * 5 + [filler, "-", filler, filler])
            continue
        s = summaries[r.system]
        lines.append(head + [
            report.fmt(s["mean_tokens"], 0),
            _triple(s, "ttft", 1e3, 1), _triple(s, "tpot", 1e3, 1), _triple(s, "itl", 1e3, 1),
            _triple(s, "e2e", 1.0, 2), report.fmt(s["output_tok_s"], 1), report.fmt(s["tau"], 2),
            report.fmt(stats.ratio(s["output_tok_s"], base_hf), 2),
            report.fmt(stats.ratio(s["output_tok_s"], base_llama), 2)])
    return report.markdown_table(HEADERS, lines)


def plot(rows_by_workload: dict[str, list[Row]], out_dir) -> str:
    workloads = list(rows_by_workload)
    fig, axes = report.new_figure(2, len(workloads), figsize=(7 * len(workloads), 7))
    for col, w in enumerate(workloads):
        rows = [r for r in rows_by_workload[w] if r.has_numbers]
        names = [r.system for r in rows]
        summaries = [row_summary(r) for r in rows]
        ax = axes[0][col]
        ax.barh(names, [s["output_tok_s"] for s in summaries], color="tab:blue")
        ax.set_title(f"{w}: output tok/s, batch 1 (higher is better)", fontsize=10)
        ax.invert_yaxis()
        ax = axes[1][col]
        p50 = [s["tpot_p50"] * 1e3 for s in summaries]
        p99 = [s["tpot_p99"] * 1e3 for s in summaries]
        ax.barh(names, p50, color="tab:orange", label="p50")
        ax.scatter(p99, names, color="black", marker="|", s=200, label="p99", zorder=3)
        ax.set_title(f"{w}: TPOT ms (lower is better)", fontsize=10)
        ax.legend(loc="lower right")
        ax.invert_yaxis()
    return report.save_plot(fig, out_dir, "latency.png")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0], quick=(4, 64), full=(16, 128))
    p.add_argument("--stop-at-eos", action="store_true",
                   help="stop rows at EOS instead of a fixed length (rows may then differ in length)")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES,
                   help="which systems to run (default all)")
    p.add_argument("--speculators", nargs="+", metavar="PREFIX",
                   help="only the specdec speculators whose name starts with one of these (default all)")
    p.add_argument("--hf-plain-only", action="store_true",
                   help="HF generate only, without its assisted-generation rows")
    args = cli.finish_args(p.parse_args(argv))
    ignore_eos = not args.stop_at_eos
    s = cli.settings(args)
    tokenizer, prompt_ids, prompt_names = cli.prompt_sets(args, s.files)

    speculators, notes = resolve(args.draft_model)
    if args.speculators:
        speculators = [x for x in speculators if x.name.startswith(tuple(args.speculators))]
    specs = []
    if "specdec" in args.families:
        specs += specdec_specs(s, speculators)
    if "hf" in args.families:
        # HF's early-exit drafting runs ~7x slower than plain generate here: full runs only.
        specs += hf_specs(s, tokenizer.eos_token_id, assisted=not args.hf_plain_only,
                          early_exit=not args.quick)
    if "llama.cpp" in args.families:
        specs += llamacpp_specs(s)
    rows = run_rows(specs, prompt_ids, args.max_tokens, ignore_eos)

    notes += sorted({f"{r.system}: {r.note}" for r in rows if r.note})
    if not any(r.system == PLAIN and r.generations for r in rows):
        notes.append("= plain: no specdec plain row, so no token check ran; "
                     "speculative specdec rows are FAIL")
    by_workload = {w: [r for r in rows if r.workload == w] for w in args.workloads}
    out_dir = report.output_dir(args.out)
    sections = [(f"{w} ({len(prompt_ids[w])} prompts x {args.max_tokens} tokens, batch 1)",
                 table(by_workload[w])) for w in args.workloads]
    plots = [plot(by_workload, out_dir)] if any(r.has_numbers for r in rows) else []
    machine = report.machine_info(cli.run_settings(args, ignore_eos))
    raw = {"rows": [_raw(r, prompt_names[r.workload]) for r in rows]}
    md = report.write_report(out_dir, "latency", "Batch-1 latency", machine, sections, notes, raw, plots)
    for heading, body in sections:
        print(f"\n## {heading}\n\n{body}")
    for n in notes:
        print(f"- {n}")
    print(f"\nwrote {md}")
    return 1 if any(r.status == FAIL for r in rows) else 0


def _raw(row: Row, names: list[str]) -> dict:
    return {
        "system": row.system, "family": row.family, "workload": row.workload, "status": row.status,
        "note": row.note, "num_matching": row.num_matching,
        "summary": row_summary(row) if row.generations else None,
        "requests": [{"prompt": n, "token_ids": g.token_ids,
                      "token_times": [round(t - g.arrival_time, 6) for t in g.token_times],
                      "num_forwards": g.num_forwards, "first_mismatch": m,
                      "accepted_per_depth": g.accepted_per_depth, "drafted_per_depth": g.drafted_per_depth,
                      "num_cached_prompt_tokens": g.num_cached_prompt_tokens}
                     for n, g, m in zip(names, row.generations, row.first_mismatch or [None] * len(names))],
    }


if __name__ == "__main__":
    raise SystemExit(main())
