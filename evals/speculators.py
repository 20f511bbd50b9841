"""The speculators every benchmark runs against plain decoding.

Adding a speculator to all three benchmarks is one line in SPECULATORS.
A `{draft_model}` value in a config is filled from --draft-model; entries
that need it are skipped (with a note) when none is given.
"""
from __future__ import annotations

from dataclasses import dataclass

from specdec.speculative import DEFAULT_SPECULATIVE_CONFIG

DRAFT_MODEL = "{draft_model}"


@dataclass(slots=True, frozen=True)
class Speculator:
    name: str     # table row suffix: "specdec " + name
    config: dict  # speculative_config passed to LLM(...)


# Self-drafting = the target's own first N layers (+ final norm and LM head)
# as the draft; HF's early-exit assisted row uses the same N.
SELF_DRAFT_LAYERS = 10

SPECULATORS = [
    Speculator("default (ngram k<=4, cost-aware)", dict(DEFAULT_SPECULATIVE_CONFIG)),
    Speculator("ngram k=4", {"method": "ngram", "num_speculative_tokens": 4}),
    Speculator("ngram tree 3x3", {"method": "ngram", "num_speculative_tokens": 3, "tree_width": 3}),
    Speculator(f"self-draft L{SELF_DRAFT_LAYERS} k=3",
               {"method": "draft_model", "num_speculative_tokens": 3, "draft_num_layers": SELF_DRAFT_LAYERS}),
    Speculator(f"self-draft L{SELF_DRAFT_LAYERS} tree 2x2 k=3",
               {"method": "draft_model", "num_speculative_tokens": 3, "draft_num_layers": SELF_DRAFT_LAYERS,
                "tree": {"width": 2, "topk": 2}}),
    Speculator("draft k=4", {"method": "draft_model", "model": DRAFT_MODEL, "num_speculative_tokens": 4}),
    # the EAGLE head shipped in drafts/weights/ (dynamic tree: depth 3, top-4 per node), with
    # the cost-aware depth and at full depth every step; hybrid = n-gram on a long match, else it
    Speculator("eagle tree 3x4", {"method": "eagle"}),
    Speculator("eagle tree 3x4 full depth", {"method": "eagle", "adaptive": False}),
    Speculator("hybrid ngram/eagle 3x4", {"method": "hybrid"}),
    # the largest tree the engine verifies (63 nodes): the head's tau, not a speed setting
    Speculator("eagle tree 7x9 full depth", {"method": "eagle", "num_speculative_tokens": 7, "tree_width": 9,
                                             "adaptive": False}),
    # the same 63 nodes shared with an n-gram chain where the context matches (one merged tree)
    Speculator("hybrid 7x9 full depth", {"method": "hybrid", "num_speculative_tokens": 7, "tree_width": 9,
                                         "adaptive": False}),
]


def resolve(draft_model: str | None) -> tuple[list[Speculator], list[str]]:
    """Speculators runnable with this --draft-model, and notes on the ones skipped."""
    ready, notes = [], []
    for spec in SPECULATORS:
        if DRAFT_MODEL in spec.config.values():
            if draft_model is None:
                notes.append(f"specdec {spec.name}: skipped, needs --draft-model PATH "
                             "(no draft model is bundled)")
                continue
            spec = Speculator(spec.name, {k: draft_model if v == DRAFT_MODEL else v
                                          for k, v in spec.config.items()})
        ready.append(spec)
    return ready, notes
