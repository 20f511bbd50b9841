"""Prometheus metrics with vLLM-like names (`specdec:` prefix), one registry per app.

Per-request latencies are observed when a choice finishes, from the engine's
RequestMetrics; engine-wide gauges and speculation counters are read at scrape
time by a collector, so the engine thread never touches prometheus.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from specdec.outputs import RequestOutput

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5,
                   0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


class ServerMetrics:
    def __init__(self, async_engine, model_name: str):
        self.registry = r = CollectorRegistry()
        labels = ["model_name"]
        self.model_name = model_name
        self.requests = Counter("specdec:request_success", "Finished engine requests by finish reason",
                                labels + ["finished_reason"], registry=r)
        self.http_errors = Counter("specdec:request_errors", "Requests answered with an error status",
                                   labels + ["status"], registry=r)
        self.prompt_tokens = Counter("specdec:prompt_tokens", "Prompt tokens processed", labels, registry=r)
        self.generation_tokens = Counter("specdec:generation_tokens", "Tokens generated", labels, registry=r)
        self.ttft = Histogram("specdec:time_to_first_token_seconds", "Arrival to first token", labels,
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("specdec:time_per_output_token_seconds",
                              "Per request: (last token - first token) / (tokens - 1)", labels,
                              buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("specdec:inter_token_latency_seconds",
                             "Gaps between consecutive engine outputs of one request (a step may emit several tokens)",
                             labels, buckets=LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("specdec:e2e_request_latency_seconds", "Arrival to finish", labels,
                             buckets=LATENCY_BUCKETS, registry=r)
        r.register(_EngineCollector(async_engine, model_name))

    def observe_finished(self, out: RequestOutput) -> None:
        m, c, name = out.metrics, out.outputs[0], self.model_name
        self.requests.labels(name, c.finish_reason or "unknown").inc()
        self.prompt_tokens.labels(name).inc(len(out.prompt_token_ids))
        self.generation_tokens.labels(name).inc(len(c.token_ids))
        if m.first_token_time is not None:
            self.ttft.labels(name).observe(m.first_token_time - m.arrival_time)
        times = m.token_times
        if len(times) > 1:
            self.tpot.labels(name).observe((times[-1] - times[0]) / (len(times) - 1))
            steps = sorted(set(times))
            for a, b in zip(steps, steps[1:]):
                self.itl.labels(name).observe(b - a)
        if m.finished_time is not None:
            self.e2e.labels(name).observe(m.finished_time - m.arrival_time)


class _EngineCollector:
    def __init__(self, async_engine, model_name: str):
        self.async_engine, self.model_name = async_engine, model_name

    def collect(self):
        name = [self.model_name]
        s = self.async_engine.stats()
        for key, doc in (("num_running", "Requests in the running batch"),
                         ("num_waiting", "Requests waiting to be scheduled"),
                         ("kv_blocks_in_use", "KV blocks held by requests"),
                         ("kv_blocks_total", "KV blocks in the pool")):
            g = GaugeMetricFamily(f"specdec:{key.removeprefix('num_')}" if key.startswith("num_")
                                  else f"specdec:{key}", doc, labels=["model_name"])
            g.add_metric(name, s[key])
            yield g
        usage = GaugeMetricFamily("specdec:kv_cache_usage_perc", "Fraction of KV blocks in use (0-1)",
                                  labels=["model_name"])
        usage.add_metric(name, s["kv_blocks_in_use"] / max(1, s["kv_blocks_total"]))
        yield usage
        sm = getattr(self.async_engine.engine, "spec_metrics", None)
        if sm is None:
            return
        for metric, value, doc in (
                ("spec_decode_num_drafts", sm.num_forwards, "Verify steps with at least one draft token"),
                ("spec_decode_num_draft_tokens", sm.num_drafted, "Draft tokens verified"),
                ("spec_decode_num_accepted_tokens", sm.num_accepted, "Draft tokens accepted"),
                ("spec_decode_num_emitted_tokens", sm.num_emitted, "Tokens emitted by those steps (accepted + bonus)"),
                # grammar-aware drafting (docs/grammar.md): forced continuations added as drafts,
                # and proposed drafts dropped because the grammar rejects them
                ("spec_decode_num_grammar_forced_tokens", sm.num_grammar_forced,
                 "Draft tokens forced by the grammar (jump-forward, verified like any draft)"),
                ("spec_decode_num_grammar_pruned_tokens", sm.num_grammar_pruned,
                 "Draft tokens removed because the grammar rejects them")):
            c = CounterMetricFamily(f"specdec:{metric}", doc, labels=["model_name"])
            c.add_metric(name, value)
            yield c
        acc = CounterMetricFamily("specdec:spec_decode_num_accepted_tokens_per_pos",
                                  "Accepted draft tokens at each depth (1-based position)",
                                  labels=["model_name", "position"])
        drafted = CounterMetricFamily("specdec:spec_decode_num_drafts_per_pos",
                                      "Verify steps that drafted each depth", labels=["model_name", "position"])
        for d, (a, n) in enumerate(zip(list(sm.accepted_per_depth), list(sm.drafted_per_depth)), start=1):
            acc.add_metric(name + [str(d)], a)
            drafted.add_metric(name + [str(d)], n)
        yield acc
        yield drafted
