"""evals/spec_ceiling.py's arithmetic: the acceptance a chain needs for a speedup, and the report."""
from types import SimpleNamespace

import pytest

from evals.spec_ceiling import _report, acceptance_needed


def test_acceptance_needed_inverts_the_geometric_tau():
    for k, a in [(1, 0.5), (3, 0.8), (6, 0.9)]:
        tau = sum(a ** i for i in range(k + 1))
        assert acceptance_needed(tau, k) == pytest.approx(a, abs=1e-9)
    assert acceptance_needed(1.0, 4) == pytest.approx(0.0, abs=1e-9)
    assert acceptance_needed(3.5, 2) is None          # more than k + 1 tokens per step: impossible


def _row(name, tau, ms, outputs, acc=()):
    return {"name": name, "tau": tau, "ms_per_step": ms, "tok_s": tau * 1e3 / ms, "outputs": outputs,
            "acceptance_per_depth": list(acc)}


def test_report_ratios_equality_and_the_needed_acceptance():
    plain = _row("plain", 1.0, 5.0, [[1, 2], [3, 4]])
    chain = _row("eagle chain 2", 1.6, 7.5, [[1, 2], [3, 5]], [0.45, 0.2])
    lines = _report([plain, chain], plain, SimpleNamespace(num_prompts=2, max_tokens=2, threads=2, target=1.8),
                    [1.0, 1.5])
    row = next(line for line in lines if line.startswith("| eagle chain 2 | 1/2 |"))
    assert "| 1.50 |" in row and "| 1.07 |" in row     # step 1.5x plain; tok/s (1.6 / 7.5) / (1 / 5)
    # 1.8x with a step of 1.5x needs tau 2.7 from a depth-2 chain: 1 + a + a^2 = 2.7 -> a = 0.90
    need = next(line for line in lines if line.startswith("| 2 | 1.50 |"))
    assert "| 2.70 | 0.90 | 1.60 | 0.45 |" in need
