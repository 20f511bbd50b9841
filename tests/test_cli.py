"""`python -m specdec.cli` as a user runs it: a real generation, and bad arguments.

Bad arguments are checked before the model loads, so those runs take about a second.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specdec.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_generate_on_the_bundled_model(bundled_path):
    proc = run_cli("generate", "Hi", "--max-tokens", "4")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "no text on stdout"
    assert "tokens in" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--max-tokens", "0"], "max_tokens must be an integer >= 1"),
    (["--temperature", "-1"], "temperature must be a finite number >= 0.0"),
    (["--top-p", "0"], "top_p must be a finite number in (0.0, 1.0]"),
])
def test_bad_sampling_argument_exits_with_a_message(args, message):
    proc = run_cli("generate", "Hi", *args, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr and "specdec: error" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_missing_model_exits_with_a_message(tmp_path):
    missing = str(tmp_path / "no_such_model")
    proc = run_cli("generate", "Hi", "--model", missing, timeout=120)
    assert proc.returncode != 0
    assert missing in proc.stderr and "Traceback" not in proc.stderr


def test_unparsable_argument_shows_usage():
    proc = run_cli("generate", "Hi", "--max-tokens", "many", timeout=60)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr and "--max-tokens" in proc.stderr
    assert "Traceback" not in proc.stderr
