"""CPU thread count: the measured best on an idle machine, and one thread when others are busy.

Measured on the 2-core AMD EPYC here: idle, two threads decode 1.2-1.3x faster than one
(`python -m evals.latency --threads 2` vs `--threads 1`: 85.9 vs 67.5 tok/s on MT-bench,
evals/results/2026-12-01-fastpath-idle-t2 and -t1); with other processes running (load average
7), libgomp's barriers turned two threads into a collapse (an ad-hoc 64-token chat decode: 2.4
tok/s with two threads against 25.5 with one). So the engine uses the preferred count only while the rest of the machine is
quiet, checked at start and again every `interval` seconds from the 1-minute load average
(less the engine's own threads), and one thread otherwise.
"""
from __future__ import annotations

import os
import time

import torch


def preferred_threads() -> int:
    """Idle-machine default: all cores up to 2 (the measured sweet spot for a 135M model)."""
    return max(1, min(2, os.cpu_count() or 1))


def others_load() -> float:
    """Runnable threads of other processes, roughly: 1-min load average minus our own threads."""
    try:
        return max(0.0, os.getloadavg()[0] - torch.get_num_threads())
    except OSError:
        return 0.0


class ThreadGuard:
    """Sets torch's thread count; re-checks the machine's load now and then (cheap)."""

    def __init__(self, fixed: int | None = None, interval: float = 5.0):
        self.fixed, self.interval = fixed, interval
        self.preferred = fixed or preferred_threads()
        self.next_check = 0.0
        self.check()

    def check(self) -> int:
        now = time.monotonic()
        if now >= self.next_check:
            self.next_check = now + self.interval
            want = self.fixed or (self.preferred if others_load() < 0.75 else 1)
            if torch.get_num_threads() != want:
                torch.set_num_threads(want)
        return torch.get_num_threads()
