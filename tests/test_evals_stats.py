"""Benchmark arithmetic on synthetic timings; expected values worked out by hand."""
import math

import pytest

from evals import stats


def test_percentile_interpolates_linearly_like_numpy():
    xs = [4.0, 1.0, 3.0, 2.0]  # sorted: 1 2 3 4, ranks 0..3
    assert stats.percentile(xs, 50) == pytest.approx(2.5)   # rank 1.5
    assert stats.percentile(xs, 90) == pytest.approx(3.7)   # rank 2.7
    assert stats.percentile(xs, 99) == pytest.approx(3.97)  # rank 2.97
    assert stats.percentile(xs, 0) == 1.0
    assert stats.percentile(xs, 100) == 4.0
    assert stats.percentile([10.0, 20.0], 90) == pytest.approx(19.0)
    assert stats.percentile([7.0], 99) == 7.0


def test_percentile_rejects_empty_and_bad_q():
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)
    assert all(math.isnan(v) for v in stats.percentiles([]).values())


def test_request_latency_groups_tokens_emitted_together():
    # 4 tokens; the 2nd and 3rd arrive in one speculative step (same timestamp).
    r = stats.request_latency(10.0, [10.5, 10.6, 10.6, 10.9])
    assert r.ttft == pytest.approx(0.5)
    assert r.e2e == pytest.approx(0.9)
    assert r.tpot == pytest.approx(0.4 / 3)
    assert r.itls == pytest.approx([0.1, 0.3])  # two gaps between three emissions
    assert r.num_tokens == 4


def test_request_latency_single_token_and_bad_times():
    r = stats.request_latency(0.0, [0.25])
    assert r.tpot is None and r.itls == [] and r.e2e == pytest.approx(0.25)
    with pytest.raises(ValueError):
        stats.request_latency(0.0, [])
    with pytest.raises(ValueError):
        stats.request_latency(0.0, [0.3, 0.2])
    with pytest.raises(ValueError):
        stats.request_latency(1.0, [0.5])


def test_summarize_over_requests():
    a = stats.request_latency(10.0, [10.5, 10.6, 10.6, 10.9])  # ttft .5 tpot .1333 itl .1 .3 e2e .9
    b = stats.request_latency(0.0, [0.2, 0.3])                  # ttft .2 tpot .1 itl .1 e2e .3
    s = stats.summarize([a, b])
    assert s["ttft_p50"] == pytest.approx(0.35)
    assert s["ttft_p90"] == pytest.approx(0.47)
    assert s["tpot_p50"] == pytest.approx((0.4 / 3 + 0.1) / 2)
    assert s["itl_p50"] == pytest.approx(0.1)    # itls sorted .1 .1 .3
    assert s["itl_p90"] == pytest.approx(0.26)   # rank 1.8
    assert s["e2e_p50"] == pytest.approx(0.6)
    assert s["e2e_p99"] == pytest.approx(0.3 + 0.99 * 0.6)
    assert s["output_tok_s"] == pytest.approx(6 / 1.2)
    assert s["num_requests"] == 2


def test_tau():
    assert stats.tau(10, 4) == pytest.approx(2.5)
    assert stats.tau(10, 10) == 1.0
    assert stats.tau(10, 0) is None
    assert stats.tau(10, None) is None


def test_acceptance_per_depth():
    assert stats.acceptance_per_depth([8, 4, 1], [10, 10, 5]) == pytest.approx([0.8, 0.4, 0.2])
    rates = stats.acceptance_per_depth([3], [4, 0])
    assert rates[0] == pytest.approx(0.75) and math.isnan(rates[1])
    with pytest.raises(ValueError):
        stats.acceptance_per_depth([5], [4])


def test_accepted_length_histogram():
    # 10 drafting steps: 8 reached depth 1, 4 depth 2, 1 depth 3.
    assert stats.accepted_length_histogram([8, 4, 1], 10) == [2, 4, 3, 1]
    assert sum(stats.accepted_length_histogram([8, 4, 1], 10)) == 10
    with pytest.raises(ValueError):
        stats.accepted_length_histogram([5, 6], 10)
    with pytest.raises(ValueError):
        stats.accepted_length_histogram([11], 10)


def test_sum_per_depth_and_ratio():
    assert stats.sum_per_depth([[1, 2], [3], [0, 1, 5]]) == [4, 3, 5]
    assert stats.sum_per_depth([]) == []
    assert stats.ratio(3.0, 2.0) == pytest.approx(1.5)
    assert stats.ratio(1.0, 0.0) is None
    assert stats.ratio(None, 1.0) is None
    assert stats.ratio(1.0, math.nan) is None
