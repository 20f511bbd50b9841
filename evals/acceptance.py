"""Acceptance per speculator and workload: python -m evals.acceptance [--quick]

tau (tokens per target forward), the acceptance rate at each draft depth and
the histogram of accepted draft tokens per step, from the engine's
RequestMetrics. Requests stop at EOS by default (acceptance on the text a
user would get; --ignore-eos for fixed length). Outputs are checked against
specdec plain as in evals.latency: a FAIL row shows no acceptance numbers.
"""
from __future__ import annotations

from evals import cli, report, stats
from evals.harness import FAIL, PLAIN, Row, run_rows
from evals.speculators import resolve
from evals.systems import specdec_specs


def acceptance_summary(row: Row) -> dict:
    accepted = stats.sum_per_depth([g.accepted_per_depth for g in row.generations])
    drafted = stats.sum_per_depth([g.drafted_per_depth for g in row.generations])
    steps = drafted[0] if drafted else 0  # steps that drafted at least one token
    tokens = sum(len(g.token_ids) for g in row.generations)
    forwards = sum(g.num_forwards or 0 for g in row.generations)
    return {
        "tau": stats.tau(tokens, forwards),
        "num_tokens": tokens,
        "num_forwards": forwards,
        "num_draft_steps": steps,
        "accepted_per_depth": accepted,
        "drafted_per_depth": drafted,
        "acceptance_per_depth": stats.acceptance_per_depth(accepted, drafted),
        "accepted_length_histogram": stats.accepted_length_histogram(accepted, steps) if steps else [],
        "mean_accepted_per_step": sum(accepted) / steps if steps else None,
    }


def table(rows: list[Row]) -> str:
    summaries = {r.system: acceptance_summary(r) for r in rows if r.has_numbers}
    depth = max((len(s["drafted_per_depth"]) for s in summaries.values()), default=0)
    headers = ["system", "check", "tau", "draft steps", "accepted/step"]
    headers += [f"acc@{d + 1}" for d in range(depth)]
    lines = []
    for r in rows:
        s = summaries.get(r.system)
        if s is None:
            filler = "FAIL" if r.status == FAIL else "-"
            lines.append([r.system, r.status, filler] + ["-"] * (len(headers) - 3))
            continue
        rates = s["acceptance_per_depth"] + [None] * (depth - len(s["acceptance_per_depth"]))
        lines.append([r.system, r.status, report.fmt(s["tau"], 2), str(s["num_draft_steps"]),
                      report.fmt(s["mean_accepted_per_step"], 2)] + [report.fmt(x, 2) for x in rates])
    return report.markdown_table(headers, lines)


def plot(rows_by_workload: dict[str, list[Row]], out_dir) -> str:
    workloads = list(rows_by_workload)
    fig, axes = report.new_figure(2, len(workloads), figsize=(7 * len(workloads), 7))
    for col, w in enumerate(workloads):
        rows = [r for r in rows_by_workload[w] if r.has_numbers and r.is_speculative]
        width = 0.8 / max(len(rows), 1)
        for i, r in enumerate(rows):
            s = acceptance_summary(r)
            hist = s["accepted_length_histogram"]
            if not hist:
                continue
            share = [h / s["num_draft_steps"] for h in hist]
            offset = (i - (len(rows) - 1) / 2) * width  # bars of one k side by side, centred on k
            axes[0][col].bar([k + offset for k in range(len(share))], share, width, label=r.system)
            rates = s["acceptance_per_depth"]
            axes[1][col].plot(range(1, len(rates) + 1), rates, marker="o",
                              label=f"{r.system} (tau {s['tau']:.2f})")
            axes[1][col].set_xticks(range(1, len(rates) + 1))
        axes[0][col].set_title(f"{w}: drafted tokens accepted per step")
        axes[0][col].set_xlabel("accepted draft tokens in a step")
        axes[0][col].set_ylabel("share of draft steps")
        axes[1][col].set_title(f"{w}: acceptance rate by draft depth")
        axes[1][col].set_xlabel("depth")
        axes[1][col].set_ylim(0, 1)
        for ax in (axes[0][col], axes[1][col]):
            if rows:
                ax.legend()
    return report.save_plot(fig, out_dir, "acceptance.png")


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0], quick=(4, 64), full=(16, 256))
    p.add_argument("--ignore-eos", action="store_true",
                   help="fixed-length outputs instead of stopping at EOS")
    p.add_argument("--speculators", nargs="+", metavar="TEXT",
                   help="only the speculator rows whose name contains one of these (e.g. eagle)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sample at this temperature (seeded per prompt) instead of greedy; rows are then "
                        "not checked against plain decoding token for token")
    args = cli.finish_args(p.parse_args(argv))
    s = cli.settings(args)
    _, prompt_ids, _ = cli.prompt_sets(args, s.files)
    speculators, notes = resolve(args.draft_model)
    if args.speculators:
        speculators = [sp for sp in speculators if any(t in sp.name for t in args.speculators)]
    rows = run_rows(specdec_specs(s, speculators), prompt_ids, args.max_tokens, args.ignore_eos,
                    sampled=args.temperature > 0)
    notes += sorted({f"{r.system}: {r.note}" for r in rows if r.note})

    by_workload = {w: [r for r in rows if r.workload == w] for w in args.workloads}
    out_dir = report.output_dir(args.out)
    sections = [(f"{w} ({len(prompt_ids[w])} prompts, up to {args.max_tokens} tokens)", table(by_workload[w]))
                for w in args.workloads]
    plots = [plot(by_workload, out_dir)] if any(r.has_numbers and r.is_speculative for r in rows) else []
    machine = report.machine_info(cli.run_settings(args, args.ignore_eos))
    raw = {"rows": [{"system": r.system, "workload": r.workload, "status": r.status, "note": r.note,
                     "summary": acceptance_summary(r) if r.generations else None}
                    for r in rows if r.system != PLAIN]}
    md = report.write_report(out_dir, "acceptance", "Speculative acceptance", machine, sections, notes, raw,
                             plots)
    for heading, body in sections:
        print(f"\n## {heading}\n\n{body}")
    for n in notes:
        print(f"- {n}")
    print(f"\nwrote {md}")
    return 1 if any(r.status == FAIL for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
