"""The output check (spec == plain or FAIL) and the latency table, on fake runners."""
import pytest

from evals import harness, latency
from evals.harness import FAIL, INFO, OK, PLAIN, REF, SKIPPED, RowSpec
from evals.runners.generation import Generation

PROMPTS = {"mtbench": [[1, 2, 3], [4, 5]], "humaneval": [[6, 7]]}


class FakeRunner:
    """Emits tokens prompt[-1]+1, +2, ... (or a wrong one where told), 10 ms apart."""

    def __init__(self, name, wrong_at=None, step=1):
        self.name, self.wrong_at, self.step = name, wrong_at, step
        self.closed = False

    def generate(self, prompt_ids, max_tokens, ignore_eos):
        ids = [prompt_ids[-1] + i + 1 for i in range(max_tokens)]
        if self.wrong_at is not None and self.wrong_at < max_tokens:
            ids[self.wrong_at] = -1
        times = [0.1 + 0.01 * (i // self.step) for i in range(max_tokens)]  # `step` tokens per emission
        drafted = [1] * (self.step - 1)  # a speculative fake drafts step-1 tokens
        return Generation(ids, 0.0, times, num_forwards=-(-max_tokens // self.step),
                          drafted_per_depth=drafted, accepted_per_depth=drafted)

    def close(self):
        self.closed = True


def _run(specs, max_tokens=5):
    return harness.run_rows(specs, PROMPTS, max_tokens, ignore_eos=True)


def test_speculative_rows_must_match_plain():
    rows = _run([
        RowSpec(PLAIN, "specdec", lambda: FakeRunner(PLAIN)),
        RowSpec("specdec good", "specdec", lambda: FakeRunner("good", step=2), is_speculative=True),
        RowSpec("specdec wrong", "specdec", lambda: FakeRunner("wrong", wrong_at=3, step=3),
                is_speculative=True),
        RowSpec("HF generate", "hf", lambda: FakeRunner("hf", wrong_at=0)),
    ])
    by = {(r.system, r.workload): r for r in rows}
    assert by[(PLAIN, "mtbench")].status == REF
    assert by[("specdec good", "mtbench")].status == OK
    assert by[("specdec good", "mtbench")].num_matching == 2
    assert by[("specdec wrong", "mtbench")].status == FAIL
    assert by[("specdec wrong", "mtbench")].first_mismatch == [3, 3]
    assert by[("specdec good", "mtbench")].note is None

    hf = by[("HF generate", "humaneval")]
    assert hf.status == INFO and hf.num_matching == 0 and hf.first_mismatch == [0]


def test_fail_row_posts_no_number_and_ratios_use_hf():
    rows = _run([
        RowSpec(PLAIN, "specdec", lambda: FakeRunner(PLAIN)),
        RowSpec("specdec wrong", "specdec", lambda: FakeRunner("w", wrong_at=1, step=5), is_speculative=True),
        RowSpec("specdec fast", "specdec", lambda: FakeRunner("f", step=5), is_speculative=True),
        RowSpec("HF generate", "hf", lambda: FakeRunner("hf")),
    ])
    text = latency.table([r for r in rows if r.workload == "mtbench"])
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    cells = [c.strip() for c in lines["specdec wrong"].strip("|").split("|")]
    assert cells[1] == "FAIL" and cells[8] == "FAIL" and cells[10] == "FAIL"
    assert not any(ch.isdigit() for c in cells[3:] for ch in c)
    # plain: 5 tokens 10 ms apart from t=0.1 -> e2e 0.14 s; fast: one emission at 0.1 s.
    fast = [c.strip() for c in lines["specdec fast"].strip("|").split("|")]
    assert fast[1] == "ok" and fast[2] == "2/2"
    assert float(fast[8]) == pytest.approx(5 / 0.1, abs=0.1)     # tok/s
    assert float(fast[9]) == pytest.approx(5.0)                   # tau: 5 tokens / 1 forward
    assert float(fast[10]) == pytest.approx(1.4, abs=0.01)        # (5/0.1) / (5/0.14)
    assert fast[11] == "-"                                        # no llama.cpp row


def test_without_plain_reference_speculative_rows_fail():
    rows = _run([
        RowSpec(PLAIN, "specdec", None, skipped="engine not importable"),
        RowSpec("specdec ngram", "specdec", None, skipped="engine not importable", is_speculative=True),
        RowSpec("HF generate", "hf", lambda: FakeRunner("hf")),
        RowSpec("HF prompt lookup", "hf", lambda: FakeRunner("hf", step=2), is_speculative=True),
    ])
    assert {r.status for r in rows if r.family == "specdec"} == {SKIPPED}
    assert {r.status for r in rows if r.family == "hf"} == {INFO}
    text = latency.table([r for r in rows if r.workload == "humaneval"])
    assert "engine" not in text and "skipped" in text


def test_broken_runner_costs_only_its_row():
    def boom():
        raise RuntimeError("no such kernel")
    rows = _run([RowSpec(PLAIN, "specdec", boom), RowSpec("HF generate", "hf", lambda: FakeRunner("hf"))])
    plain = [r for r in rows if r.system == PLAIN]
    assert all(r.status == SKIPPED and "no such kernel" in r.note for r in plain)
    assert all(len(r.generations) == len(PROMPTS[r.workload]) for r in rows if r.family == "hf")


def test_first_difference():
    assert harness.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert harness.first_difference([1, 2, 3], [1, 9, 3]) == 1
    assert harness.first_difference([1, 2], [1, 2, 3]) == 2


def test_speculative_row_that_never_drafts_is_flagged():
    rows = _run([RowSpec(PLAIN, "specdec", lambda: FakeRunner(PLAIN)),
                 RowSpec("specdec ngram", "specdec", lambda: FakeRunner("n"), is_speculative=True)])
    spec = [r for r in rows if r.system == "specdec ngram"]
    assert all(r.status == OK and "drafted no tokens" in r.note for r in spec)


def test_systems_take_turns_prompt_by_prompt():
    calls = []

    class Recording(FakeRunner):
        def generate(self, prompt_ids, max_tokens, ignore_eos):
            if max_tokens == 10:  # not the 8-token warm-up
                calls.append((self.name, prompt_ids[-1]))
            return super().generate(prompt_ids, max_tokens, ignore_eos)

    _run([RowSpec(PLAIN, "specdec", lambda: Recording("a")),
          RowSpec("HF generate", "hf", lambda: Recording("b"))], max_tokens=10)
    # prompts end in 3, 5 (mtbench), 7 (humaneval); the first system rotates
    assert calls == [("a", 3), ("b", 3), ("b", 5), ("a", 5), ("a", 7), ("b", 7)]


def test_runner_failing_mid_run_is_dropped_and_closed():
    made = []

    class Flaky(FakeRunner):
        def generate(self, prompt_ids, max_tokens, ignore_eos):
            if prompt_ids[-1] == 5:
                raise RuntimeError("out of blocks")
            return super().generate(prompt_ids, max_tokens, ignore_eos)

    def make():
        made.append(Flaky("flaky"))
        return made[-1]
    rows = _run([RowSpec(PLAIN, "specdec", lambda: FakeRunner(PLAIN)),
                 RowSpec("specdec ngram", "specdec", make, is_speculative=True)])
    flaky = [r for r in rows if r.system == "specdec ngram"]
    assert all(r.status == SKIPPED and "out of blocks" in r.note and not r.generations for r in flaky)
    assert made[0].closed


def test_sampled_rows_are_reported_without_a_token_check():
    """--temperature > 0: different tokens are expected, so no row fails for them."""
    rows = harness.run_rows([
        RowSpec(PLAIN, "specdec", lambda: FakeRunner(PLAIN)),
        RowSpec("specdec sampled", "specdec", lambda: FakeRunner("s", wrong_at=1, step=2), is_speculative=True),
    ], PROMPTS, 5, ignore_eos=True, sampled=True)
    status = {(r.system, r.workload): r.status for r in rows}
    assert status[(PLAIN, "mtbench")] == REF and status[("specdec sampled", "mtbench")] == INFO
    assert all(r.has_numbers and "sampled" in r.note for r in rows if r.system != PLAIN)
