"""Run every system over the same prompt ids, then check outputs against specdec plain.

The check is the benchmark's guard: greedy speculation must reproduce plain
greedy decoding token for token, so a speculative specdec row whose tokens
differ from specdec plain on any prompt is FAIL and posts no number. Rows of
other systems are compared too, for information only (HF runs the same
weights in another implementation; llama.cpp runs them 4-bit).
"""
from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from evals.runners.generation import Generation, Runner

PLAIN = "specdec plain"  # the reference row's name

# Row statuses
REF, OK, FAIL, INFO, SKIPPED = "ref", "ok", "FAIL", "info", "skipped"


@dataclass(slots=True)
class RowSpec:
    system: str                           # row name in the tables
    family: str                           # "specdec" | "hf" | "llama.cpp"
    make: Callable[[], Runner] | None     # builds the runner (loads the model)
    skipped: str | None = None            # why this row cannot run
    is_speculative: bool = False


@dataclass(slots=True)
class Row:
    system: str
    family: str
    workload: str
    is_speculative: bool
    generations: list[Generation] = field(default_factory=list)
    status: str = INFO
    note: str | None = None
    num_matching: int | None = None       # prompts whose tokens equal specdec plain's
    first_mismatch: list[int | None] = field(default_factory=list)  # per prompt: first differing index

    @property
    def has_numbers(self) -> bool:
        return bool(self.generations) and self.status not in (FAIL, SKIPPED)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_rows(specs: list[RowSpec], prompt_sets: dict[str, list[list[int]]], max_tokens: int,
             ignore_eos: bool, sampled: bool = False) -> list[Row]:
    """Every spec over every workload at batch 1, then the output check.

    All runners are loaded first and then take turns prompt by prompt (who
    goes first rotates): on a shared machine the load of other processes
    changes minute to minute, and running one system after another would
    hand that drift to whichever row ran at the bad moment.
    """
    rows = {spec.system: [Row(spec.system, spec.family, w, spec.is_speculative) for w in prompt_sets]
            for spec in specs}
    runners: dict[str, Runner] = {}
    first = next(iter(prompt_sets.values()))[0]
    for spec in specs:
        if spec.skipped:
            _drop(rows[spec.system], spec.skipped)
            log(f"{spec.system}: skipped ({spec.skipped})")
            continue
        try:
            log(f"{spec.system}: loading")
            runners[spec.system] = runner = spec.make()
            # Warm-up: first calls pay for allocator growth and lazy init.
            runner.generate(first, min(8, max_tokens), ignore_eos)
        except Exception as e:  # a broken system costs its row, not the run
            _fail(runners, rows[spec.system], spec.system, e)
    turn = 0
    for w_index, (workload, prompts) in enumerate(prompt_sets.items()):
        for i, ids in enumerate(prompts):
            names = list(runners)
            names = names[turn % len(names):] + names[:turn % len(names)] if names else []
            turn += 1
            for name in names:
                try:
                    g = runners[name].generate(ids, max_tokens, ignore_eos)
                except Exception as e:
                    _fail(runners, rows[name], name, e)
                    continue
                rows[name][w_index].generations.append(g)
                log(f"{name} {workload} #{i}: {len(g.token_ids)} tok in {g.latency.e2e:.2f}s")
    for runner in runners.values():
        runner.close()
    flat = [r for spec in specs for r in rows[spec.system]]
    if sampled:     # seeded sampling: no token-for-token reference (tests/test_eagle_sampling.py
        for r in flat:   # checks the distribution instead)
            if r.status != SKIPPED:
                r.status = REF if r.system == PLAIN else INFO
                r.note = r.note or "sampled: outputs are not compared token for token"
    else:
        check_outputs(flat)
    return flat


def _drop(rows: list[Row], why: str) -> None:
    for r in rows:
        r.status, r.note, r.generations = SKIPPED, why, []


def _fail(runners: dict, rows: list[Row], name: str, e: Exception) -> None:
    traceback.print_exc()
    _drop(rows, f"error: {type(e).__name__}: {e}")
    runner = runners.pop(name, None)
    if runner is not None:
        try:
            runner.close()
        except Exception:
            pass


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (or the shorter length); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def check_outputs(rows: list[Row]) -> None:
    """Set status / num_matching of every row against specdec plain (mutates rows)."""
    ref = {r.workload: r for r in rows if r.system == PLAIN and r.generations}
    for r in rows:
        if r.status == SKIPPED:
            continue
        if r.system == PLAIN:
            r.status = REF
            continue
        plain = ref.get(r.workload)
        if plain is None:
            # Without a plain reference a speculative specdec row cannot prove itself.
            r.status = FAIL if (r.family == "specdec" and r.is_speculative) else INFO
            r.note = r.note or "no specdec plain reference to compare tokens with"
            continue
        r.first_mismatch = [first_difference(g.token_ids, p.token_ids)
                            for g, p in zip(r.generations, plain.generations)]
        r.num_matching = sum(m is None for m in r.first_mismatch)
        if r.family == "specdec" and r.is_speculative:
            r.status = OK if r.num_matching == len(plain.generations) else FAIL
            if not any(sum(g.drafted_per_depth) for g in r.generations):
                # An engine that ignores speculative_config would post plain numbers under this name.
                r.note = ("drafted no tokens (no n-gram match, or speculation inactive): "
                          "the numbers are plain decoding")
        else:
            r.status = INFO


def match_cell(row: Row) -> str:
    if row.status == REF:
        return "ref"
    if row.num_matching is None:
        return "-"
    return f"{row.num_matching}/{len(row.generations)}"
