"""Acceptance tables from per-request engine counters (synthetic)."""
import pytest

from evals import acceptance
from evals.harness import FAIL, OK, Row
from evals.runners.generation import Generation


def _gen(n_tokens, forwards, accepted, drafted):
    return Generation(list(range(n_tokens)), 0.0, [1.0] * n_tokens, num_forwards=forwards,
                      accepted_per_depth=accepted, drafted_per_depth=drafted)


def _row(status=OK):
    # request 1: 6 draft steps, 4 reached depth 1, 2 depth 2; request 2: 4 steps, depth 3 drafted twice
    gens = [_gen(12, 7, [4, 2], [6, 6]), _gen(9, 5, [3, 1, 1], [4, 4, 2])]
    return Row("specdec ngram k=4", "specdec", "mtbench", True, gens, status=status)


def test_acceptance_summary_adds_counters_over_requests():
    s = acceptance.acceptance_summary(_row())
    assert s["tau"] == pytest.approx(21 / 12)
    assert s["accepted_per_depth"] == [7, 3, 1] and s["drafted_per_depth"] == [10, 10, 2]
    assert s["acceptance_per_depth"] == pytest.approx([0.7, 0.3, 0.5])
    assert s["num_draft_steps"] == 10
    assert s["accepted_length_histogram"] == [3, 4, 2, 1]  # 10-7, 7-3, 3-1, 1-0
    assert s["mean_accepted_per_step"] == pytest.approx(1.1)


def test_table_shows_rates_and_hides_fail_rows():
    text = acceptance.table([_row()])
    assert "acc@3" in text and "| 1.75 | 10 | 1.10 | 0.70 | 0.30 | 0.50 |" in text
    bad = acceptance.table([_row(status=FAIL)])
    assert "0.70" not in bad and "| FAIL | FAIL |" in bad
