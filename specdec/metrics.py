"""Engine metrics in vLLM's `LLM.get_metrics()` shape: a flat list of named Counter / Gauge /
Vector records, so acceptance is one line for any user:

    m = {x.name: x for x in llm.get_metrics()}
    tau = 1 + m["specdec:spec_decode_num_accepted_tokens"].value / m["specdec:spec_decode_num_drafts"].value
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Counter:
    name: str
    value: int
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Gauge:
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Vector:
    name: str
    values: list[int]
    labels: dict[str, str] = field(default_factory=dict)


def engine_metrics(engine) -> list[Counter | Gauge | Vector]:
    """Snapshot of `engine` (an LLMEngine); reads only."""
    spec = engine.spec_metrics
    bm = engine.block_manager
    used = bm.num_blocks - bm.num_free_blocks
    return [
        Gauge("specdec:num_requests_running", len(engine.scheduler.running)),
        Gauge("specdec:num_requests_waiting", len(engine.scheduler.waiting)),
        Gauge("specdec:kv_cache_usage_perc", used / bm.num_blocks if bm.num_blocks else 0.0),
        Counter("specdec:spec_decode_num_drafts", spec.num_forwards),
        Counter("specdec:spec_decode_num_draft_tokens", spec.num_drafted),
        Counter("specdec:spec_decode_num_accepted_tokens", spec.num_accepted),
        Vector("specdec:spec_decode_num_accepted_tokens_per_pos", list(spec.accepted_per_depth)),
        Vector("specdec:spec_decode_num_drafts_per_pos", list(spec.drafted_per_depth)),
    ]
