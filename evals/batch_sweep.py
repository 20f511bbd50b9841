"""Throughput vs batch size: python -m evals.batch_sweep [--quick]

Output tok/s (all output tokens / wall time from first add to last token) at
batch 1, 4, 16, 64, for specdec plain, specdec with each speculator, and HF
generate on a left-padded batch as the reference. All requests are added at
once and run to a fixed length, so every row does the same work. Prompts mix
the workloads (alternating) so a batch is not one kind of text.
Speculative rows are checked against specdec plain at the same batch size.
"""
from __future__ import annotations

import math
import traceback

from evals import cli, datasets, report
from evals.harness import FAIL, OK, PLAIN, REF, SKIPPED, first_difference, log
from evals.model_files import load_hf_tokenizer
from evals.speculators import resolve
from evals.systems import hf_specs, specdec_specs

BATCHES = (1, 4, 16, 64)


def mixed_prompts(tokenizer, workloads: list[str], count: int) -> list[list[int]]:
    per = math.ceil(count / len(workloads))
    sets = [[datasets.chat_token_ids(tokenizer, p) for p in datasets.load_prompts(w, per)] for w in workloads]
    mixed = [s[i] for i in range(per) for s in sets if i < len(s)]
    if len(mixed) < count:
        raise ValueError(f"need {count} prompts, the workloads have {len(mixed)}")
    return mixed[:count]


def sweep(specs, prompts: list[list[int]], batches: list[int], max_tokens: int,
          notes: list[str], repeats: int = 1, rounds: dict | None = None) -> dict[str, dict]:
    """{system: {batch: BatchResult}}; {} for a system that cannot run (with a note).

    Systems take turns batch size by batch size, for the same reason as the
    batch-1 harness: load drift on a shared machine spreads over every row. With
    `repeats` > 1 every system runs each batch that many times, in alternation, and
    the median run (by tok/s) is kept: run-to-run noise here is ~5%, more than the
    differences the sweep is meant to show. `rounds`, if given, receives every run's tok/s
    in round order ({system: {batch: [...]}}), for ratios paired round by round.
    """
    results: dict[str, dict] = {spec.system: {} for spec in specs}
    runners = {}
    for spec in specs:
        if spec.skipped:
            notes.append(f"{spec.system}: {spec.skipped}")
            continue
        try:
            log(f"{spec.system}: loading")
            runners[spec.system] = spec.make()
            runners[spec.system].generate_batch(prompts[:1], min(8, max_tokens), True)  # warm-up
        except Exception as e:
            traceback.print_exc()
            notes.append(f"{spec.system}: error: {type(e).__name__}: {e}")
            runners.pop(spec.system, None)
    for turn, b in enumerate(batches):
        runs: dict[str, list] = {}
        for _ in range(repeats):
            names = list(runners)
            for name in names[turn % max(len(names), 1):] + names[:turn % max(len(names), 1)]:
                try:
                    res = runners[name].generate_batch(prompts[:b], max_tokens, True)
                    runs.setdefault(name, []).append(res)
                    log(f"{name} batch {b}: {res.output_tok_s:.1f} tok/s")
                except Exception as e:
                    traceback.print_exc()
                    notes.append(f"{name}: error at batch {b}: {type(e).__name__}: {e}")
                    results[name] = {}
                    runs.pop(name, None)
                    runners.pop(name).close()
        for name, got in runs.items():
            results[name][b] = sorted(got, key=lambda r: r.output_tok_s)[len(got) // 2]
            if rounds is not None:
                rounds.setdefault(name, {})[b] = [r.output_tok_s for r in got]
    for runner in runners.values():
        runner.close()
    return results


def check(results: dict, plain: dict) -> str:
    """ok if every output equals specdec plain's at the same batch size, else FAIL."""
    if not plain:
        return FAIL
    for b, res in results.items():
        if b not in plain:
            return FAIL
        if any(first_difference(g.token_ids, p.token_ids) is not None
               for g, p in zip(res.generations, plain[b].generations)):
            return FAIL
    return OK


def main(argv: list[str] | None = None) -> int:
    p = cli.parser(__doc__.splitlines()[0], quick=(0, 32), full=(0, 128))
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--speculators", nargs="+", metavar="PREFIX",
                   help="only the specdec speculators whose name starts with one of these (default all)")
    p.add_argument("--no-hf", action="store_true", help="leave out the HF batched generate reference")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per system and batch, alternating; the median is reported")
    args = cli.finish_args(p.parse_args(argv))
    s = cli.settings(args)
    tokenizer = load_hf_tokenizer(s.files)
    prompts = mixed_prompts(tokenizer, args.workloads, max(args.batches))
    speculators, notes = resolve(args.draft_model)
    if args.speculators:
        speculators = [x for x in speculators if x.name.startswith(tuple(args.speculators))]
    specs = specdec_specs(s, speculators)
    if not args.no_hf:
        specs += hf_specs(s, tokenizer.eos_token_id, assisted=False)

    rounds: dict = {}
    results = sweep(specs, prompts, args.batches, args.max_tokens, notes, args.repeats, rounds)
    status = {}
    if args.repeats > 1:
        notes.append(f"each cell: the median of {args.repeats} runs, systems alternating")
    for spec in specs:
        if not results[spec.system]:
            status[spec.system] = SKIPPED
        elif spec.system == PLAIN:
            status[spec.system] = REF
        elif spec.family == "specdec":
            status[spec.system] = check(results[spec.system], results.get(PLAIN, {}))
            gens = [g for r in results[spec.system].values() for g in r.generations]
            if not any(sum(g.drafted_per_depth) for g in gens):
                notes.append(f"{spec.system}: drafted no tokens (no n-gram match, or speculation "
                             "inactive): the numbers are plain decoding")
        else:
            status[spec.system] = "info"

    headers = ["system", "check"] + [f"batch {b} tok/s" for b in args.batches]
    lines = []
    for spec in specs:
        res, st = results[spec.system], status[spec.system]
        cells = ["FAIL" if st == FAIL else report.fmt(res[b].output_tok_s, 1) if b in res else "-"
                 for b in args.batches]
        lines.append([spec.system, st] + cells)
    body = report.markdown_table(headers, lines)
    paired = paired_ratios(rounds, [x.system for x in specs if x.family == "specdec"], args.batches)
    if paired:
        body += "\n\n" + report.markdown_table(
            ["system", "vs plain"] + [f"batch {b}" for b in args.batches],
            [[n, "x plain, paired"] + [report.fmt(r[b], 3) if b in r else "-" for b in args.batches]
             for n, r in paired.items()])
        notes.append("x plain, paired: the median over rounds of (this run's tok/s / plain's run "
                     "in the same round); rounds alternate the systems, so drift cancels")

    out_dir = report.output_dir(args.out)
    plots = []
    if any(results[n] and status[n] != FAIL for n in results):
        fig, axes = report.new_figure(1, 1, figsize=(7, 4.5))
        ax = axes[0][0]
        for name, res in results.items():
            if res and status[name] != FAIL:
                ax.plot(list(res), [r.output_tok_s for r in res.values()], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(args.batches, [str(b) for b in args.batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel("output tok/s")
        ax.set_title(f"throughput, {args.max_tokens} tokens per request")
        ax.legend()
        plots.append(report.save_plot(fig, out_dir, "batch_sweep.png"))
    machine = report.machine_info({**cli.run_settings(args, True), "batches": args.batches,
                                   "prompts_per_workload": None})
    raw = {"rows": [{"system": n, "status": status[n],
                     "batches": {b: {"wall_time": r.wall_time, "output_tok_s": r.output_tok_s,
                                     "tau": _tau(r)} for b, r in res.items()}}
                    for n, res in results.items()]}
    heading = f"output tok/s, {args.max_tokens} tokens per request, prompts from {'+'.join(args.workloads)}"
    md = report.write_report(out_dir, "batch_sweep", "Throughput vs batch size", machine,
                             [(heading, body)], notes, raw, plots)
    print(f"\n## {heading}\n\n{body}")
    for n in notes:
        print(f"- {n}")
    print(f"\nwrote {md}")
    return 1 if FAIL in status.values() else 0


def paired_ratios(rounds: dict, systems: list[str], batches: list[int]) -> dict[str, dict]:
    """{system: {batch: median over rounds of tok/s / plain's tok/s in the same round}}."""
    plain = rounds.get(PLAIN, {})
    out = {}
    for name in systems:
        if name == PLAIN or name not in rounds:
            continue
        ratios = {}
        for b in batches:
            pairs = list(zip(rounds[name].get(b, []), plain.get(b, [])))
            if pairs:
                r = sorted(x / y for x, y in pairs)
                ratios[b] = r[len(r) // 2]
        out[name] = ratios
    return out


def _tau(result) -> float | None:
    forwards = [g.num_forwards for g in result.generations]
    if not all(forwards):
        return None
    # Per-request tau averaged: in a batch one forward serves every request.
    return sum(g.tau for g in result.generations) / len(result.generations)


if __name__ == "__main__":
    raise SystemExit(main())
