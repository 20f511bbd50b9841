"""Benchmark arithmetic: percentiles, per-request latencies, tau, acceptance.

Words used here (and in the tables):
- arrival: when the request was handed to the system (prompt ids ready).
- TTFT: first output token time - arrival (prefill + first sample).
- TPOT: (last token time - first token time) / (num tokens - 1), per request:
  the average decode cost of one token after the first.
- ITL: gap between two consecutive *emissions*. Speculation emits several
  tokens at once with one timestamp; those count as one emission, so ITL is
  the stall a streaming client sees, and its p99 shows the worst stall.
- e2e: last token time - arrival.
- tau: output tokens / target forwards (1.0 for plain decoding; the bonus
  token counts, the prefill forward counts since it emits the first token).
- acceptance at depth d: accepted[d] / drafted[d], where drafted[d] counts
  steps that proposed a token at depth d and accepted[d] those whose
  accepted path reached depth d (vLLM's per-position acceptance rate).
All times are seconds; tables convert.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile with linear interpolation between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    xs = sorted(values)
    rank = (len(xs) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """{"p50": .., "p90": .., "p99": ..}; NaN for no values so a table can show '-'."""
    if not values:
        return {f"p{q}": math.nan for q in PERCENTILES}
    return {f"p{q}": percentile(values, q) for q in PERCENTILES}


@dataclass(slots=True)
class RequestLatency:
    ttft: float
    tpot: float | None        # None for a single-token output (no decode step)
    itls: list[float]         # one per emission after the first
    e2e: float
    num_tokens: int


def request_latency(arrival_time: float, token_times: Sequence[float]) -> RequestLatency:
    """Latencies of one request from its arrival and per-token emission times."""
    if not token_times:
        raise ValueError("request emitted no tokens")
    if any(b < a for a, b in zip(token_times, token_times[1:])) or token_times[0] < arrival_time:
        raise ValueError("token times must be non-decreasing and after arrival")
    n = len(token_times)
    emissions = sorted(set(token_times))  # tokens emitted together share a timestamp
    return RequestLatency(
        ttft=token_times[0] - arrival_time,
        tpot=(token_times[-1] - token_times[0]) / (n - 1) if n > 1 else None,
        itls=[b - a for a, b in zip(emissions, emissions[1:])],
        e2e=token_times[-1] - arrival_time,
        num_tokens=n,
    )


def tau(num_output_tokens: int, num_forwards: int | None) -> float | None:
    """Tokens per target forward; None when the system does not report forwards."""
    if not num_forwards:
        return None
    return num_output_tokens / num_forwards


def sum_per_depth(per_request: Sequence[Sequence[int]]) -> list[int]:
    """Element-wise sum of per-depth counters of different lengths."""
    total: list[int] = []
    for counts in per_request:
        total.extend([0] * (len(counts) - len(total)))
        for d, c in enumerate(counts):
            total[d] += c
    return total


def acceptance_per_depth(accepted: Sequence[int], drafted: Sequence[int]) -> list[float]:
    """accepted[d] / drafted[d] per depth (depth 1 first); NaN where nothing was drafted."""
    if len(accepted) > len(drafted):
        raise ValueError("accepted has more depths than drafted")
    rates = []
    for d, n in enumerate(drafted):
        a = accepted[d] if d < len(accepted) else 0
        if a > n:
            raise ValueError(f"accepted {a} > drafted {n} at depth {d + 1}")
        rates.append(a / n if n else math.nan)
    return rates


def accepted_length_histogram(accepted: Sequence[int], num_draft_steps: int) -> list[int]:
    """Steps that accepted exactly k drafted tokens, k = 0..len(accepted).

    An accepted path holds at most one node per depth, so accepted[d] is the
    number of steps whose path reached depth d+1 (non-increasing in d), and
    steps accepting exactly k = accepted[k-1] - accepted[k] (accepted[-1] :=
    num_draft_steps).
    """
    reach = [num_draft_steps, *accepted, 0]
    if any(b > a for a, b in zip(reach, reach[1:])):
        raise ValueError(f"accepted counts must be non-increasing and <= steps: {reach[:-1]}")
    return [reach[k] - reach[k + 1] for k in range(len(accepted) + 1)]


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, None when either is missing or the baseline is 0 / NaN."""
    if value is None or baseline is None or baseline == 0 or math.isnan(baseline) or math.isnan(value):
        return None
    return value / baseline


def summarize(latencies: Sequence[RequestLatency]) -> dict[str, float]:
    """Percentiles of TTFT / TPOT / ITL / e2e over requests, and output tok/s.

    tok/s = all output tokens / summed e2e: at batch 1 the requests run one
    after another, so this is the rate a single user sees end to end.
    """
    out: dict[str, float] = {}
    ttfts = [r.ttft for r in latencies]
    tpots = [r.tpot for r in latencies if r.tpot is not None]
    itls = [x for r in latencies for x in r.itls]
    e2es = [r.e2e for r in latencies]
    for name, vals in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2e", e2es)):
        for key, v in percentiles(vals).items():
            out[f"{name}_{key}"] = v
    total_time = sum(e2es)
    out["output_tok_s"] = sum(r.num_tokens for r in latencies) / total_time if total_time > 0 else math.nan
    out["num_requests"] = len(latencies)
    return out
