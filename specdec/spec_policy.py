"""How many tokens to draft, per request and step: only as many as pay for their verification.

A verify step over M tokens costs more than a one-token step (on a CPU, roughly linear in
M), and a drafted token is worth something only if it is accepted. With a per-token
acceptance probability `a` (a chain's i-th draft survives with probability a**i), drafting
k tokens at batch size B gives each request 1 + E_k tokens per step, E_k = a + a^2 + ... +
a^k, for a step cost of cost(B * (1 + k)) instead of cost(B). The policy drafts the k that
maximizes

    speedup(k) = (1 + E_k) * cost(B) / cost(B * (1 + k * width))

and k = 0 (plain decoding) when no k beats 1 by a margin, so speculation never runs slower
than plain decoding as far as the measured costs and acceptance say. A request that stops
drafting probes again with one token every `probe_every` steps, so a context that starts
repeating (and lets the n-gram drafter match) is noticed.

`StepCost` is an online least-squares line through the measured step times (the whole step:
drafting, grammar masks and per-node verification grow with the drafted tokens too; exponential
forgetting, so a machine that gets busy is followed) plus each step size's own recent time,
which the line only rescales as it moves: the CPU int4 kernel works in blocks of 4 rows, so
a 5-token verify costs 2.4x a one-token step while a 4-token one costs 1.65x (measured, fused
path, 2 threads) -- a step function no line fits. The engine seeds both at start by timing
every verify size its drafter can ask for. A request whose probes keep failing probes less
and less often (backoff up to 8x), and a probe never makes its step much dearer.
"""
from __future__ import annotations

from dataclasses import dataclass


class StepCost:
    """seconds(num_tokens): each size's own recent time, scaled by how the fitted line
    c0 + c1 * num_tokens has moved since that size was last seen; the line alone for sizes
    never seen."""

    def __init__(self, decay: float = 0.97, size_alpha: float = 0.3):
        self.decay = decay
        self.size_alpha = size_alpha
        self.sw = self.sm = self.smm = self.st = self.smt = 0.0
        # tokens -> (EMA of its step time, the line's value for it when last observed)
        self.sizes: dict[int, tuple[float, float]] = {}
        self._coef: tuple[float, float] | None = None   # the line, until the next observation

    def observe(self, num_tokens: int, seconds: float, weight: float = 1.0) -> None:
        d = self.decay
        m = float(num_tokens)
        self.sw = d * self.sw + weight
        self.sm = d * self.sm + weight * m
        self.smm = d * self.smm + weight * m * m
        self.st = d * self.st + weight * seconds
        self.smt = d * self.smt + weight * m * seconds
        self._coef = None
        seen = self.sizes.get(num_tokens)
        t = seconds if seen is None else seen[0] + min(1.0, self.size_alpha * weight) * (seconds - seen[0])
        self.sizes[num_tokens] = (t, self.linear(num_tokens))

    def coefficients(self) -> tuple[float, float]:
        if self._coef is not None:         # asked for per request per step: computed once
            return self._coef
        if self.sw == 0.0:
            return 1.0, 0.0
        mean_m, mean_t = self.sm / self.sw, self.st / self.sw
        var = self.smm / self.sw - mean_m * mean_m
        slope = (self.smt / self.sw - mean_m * mean_t) / var if var > 1e-9 else 0.0
        slope = max(slope, 0.0)
        self._coef = (max(mean_t - slope * mean_m, 1e-6), slope)
        return self._coef

    def linear(self, num_tokens: int) -> float:
        c0, c1 = self.coefficients()
        return c0 + c1 * num_tokens

    def predict(self, num_tokens: int) -> float:
        seen = self.sizes.get(num_tokens)
        if seen is None:
            return self.linear(num_tokens)
        return seen[0] * self.linear(num_tokens) / seen[1]


def expected_accepted(a: float, k: int) -> float:
    """E[accepted drafts] of a k-token chain whose i-th token survives with probability a**i."""
    return sum(a ** i for i in range(1, k + 1))


@dataclass(slots=True)
class SpeculationPolicy:
    max_depth: int
    width: int = 1                 # nodes per depth (tree width)
    cost: StepCost | None = None
    prior_acceptance: float = 0.5  # `a` for a request with no history yet
    alpha: float = 0.3             # EMA weight of the newest step's acceptance
    margin: float = 1.05           # speedup a depth must promise over plain decoding
    probe_every: int = 8           # plain steps before a one-token probe
    max_backoff: int = 8           # a failing request probes at most every probe_every * this
    probe_max_cost: float = 1.5    # a probe may cost 50% of one token's share of its step

    def depth(self, acceptance: float | None, planned_tokens: int = 1,
              expected_tokens: float | None = None) -> int:
        """Draft depth for a request with acceptance estimate `acceptance` (None = no history)
        joining a step that already holds `planned_tokens` tokens expected to emit
        `expected_tokens` (default: as many); 0 = decode plainly this step.

        The step's throughput decides: drafting k here adds k * width tokens to the step and
        E_k expected emitted tokens, so it pays iff (expected + E_k) / cost(planned + k * width)
        beats expected / cost(planned) by the margin. At batch 1 that is the per-request
        speedup; in a batch, one request's drafts are weighed against everybody's step time.
        """
        a = self.prior_acceptance if acceptance is None else acceptance
        if self.cost is None:
            return self.max_depth
        t = max(planned_tokens, 1)
        e = float(t) if expected_tokens is None else expected_tokens
        base = e / self.cost.predict(t)
        best_k, best = 0, self.margin
        for k in range(1, self.max_depth + 1):
            speedup = (e + expected_accepted(a, k)) / self.cost.predict(t + k * self.width) / base
            if speedup > best:
                best_k, best = k, speedup
        return best_k

    def probe_is_cheap(self, planned_tokens: int) -> bool:
        """A one-token probe may slow the step it joins by at most `probe_max_cost - 1` of one
        token's share of it: at batch 1 that is 50% of the step (an EAGLE probe, draft + 2-token
        verify, costs ~1.35x a plain step here; once per 8-64 steps), at batch 16 about 3%,
        which only a probe that fills an already opened int4 row block can meet."""
        if self.cost is None:
            return True
        t = max(planned_tokens, 1)
        allowed = 1 + (self.probe_max_cost - 1) / t
        return self.cost.predict(t + 1) <= allowed * self.cost.predict(t)

    def update(self, acceptance: float | None, depth: int, num_accepted: int) -> float:
        """New acceptance estimate after a step that drafted `depth` and accepted `num_accepted`.

        Per-position evidence: positions 1..num_accepted survived, position num_accepted + 1
        (if drafted) failed; positions past it say nothing.
        """
        tried = min(depth, num_accepted + 1)
        observed = num_accepted / tried if tried else 0.0
        if acceptance is None:         # the prior counts as evidence too: one bad step is not proof
            acceptance = self.prior_acceptance
        w = min(1.0, self.alpha * tried)
        return (1 - w) * acceptance + w * observed
