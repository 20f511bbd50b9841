"""speculative_config (vLLM's shape) -> a proposer, and the engine-wide speculation metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specdec.validation import check_bool, check_int, check_text

METHODS = ("ngram", "draft_model", "eagle", "hybrid")

# eagle / hybrid when not given: tree depth, and children per node (= frontier kept per depth).
# The shipped head was trained for 3 unrolled steps; 3 x 4 measured tau 1.69 against 1.67 for
# 4 x 3 and 5 x 3 (8 MT-bench prompts x 48 tokens, full depth, first head).
EAGLE_DEFAULT_DEPTH = 3
EAGLE_DEFAULT_TOPK = 4

# What `specdec serve` and the benchmarks' "default" row speculate with when no config is
# given: n-gram drafts over the prompt and output (no draft weights needed), depth chosen per
# request and step by the cost-aware policy (spec_policy.py), so it never drafts at a loss.
DEFAULT_SPECULATIVE_CONFIG = {"method": "ngram", "num_speculative_tokens": 4}


@dataclass(slots=True)
class SpeculativeConfig:
    method: str                        # "ngram" | "draft_model" | "eagle" | "hybrid" (n-gram on a
                                       # long match, else eagle; drafts/hybrid.py)
    num_speculative_tokens: int = 4    # tree depth K
    model: str | None = None           # draft checkpoint (draft_model); None = the target's own file;
                                       # eagle: head folder, None = the head shipped in drafts/weights/
    draft_num_layers: int | None = None  # keep only the first N layers of the draft (self-drafting)
    tree_width: int = 1                # draft_model: frontier per depth; ngram: continuations (paths);
                                       # eagle: top-k per node and frontier per depth (default 4)
    tree_topk: int | None = None       # draft_model: children proposed per frontier node
    ngram_max: int = 4                 # ngram: longest suffix matched
    ngram_min: int = 2                 # ngram: shortest suffix matched (1-token matches are mostly noise)
    adaptive: bool = True              # depth per request and step from acceptance and measured
                                       # verify cost (spec_policy.py); False = always full depth

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SpeculativeConfig":
        if not isinstance(d, dict):
            raise ValueError(f"speculative_config must be a dict, got {type(d).__name__}")
        d = dict(d)
        tree = d.pop("tree", None)
        if isinstance(tree, dict):     # {"width": w, "topk": k}
            unknown = set(tree) - {"width", "topk"}
            if unknown:
                raise ValueError(f"unknown speculative_config['tree'] keys {sorted(map(str, unknown))}")
            d.setdefault("tree_width", tree.get("width", 1))
            d.setdefault("tree_topk", tree.get("topk"))
        elif tree is not None:
            raise ValueError("speculative_config['tree'] must be a dict like {'width': 2, 'topk': 2}")
        for alias, name in (("prompt_lookup_max", "ngram_max"), ("prompt_lookup_min", "ngram_min")):
            if alias in d:
                d[name] = d.pop(alias)
        if d.get("method") in ("eagle", "hybrid"):
            d.setdefault("tree_width", EAGLE_DEFAULT_TOPK)
            d.setdefault("num_speculative_tokens", EAGLE_DEFAULT_DEPTH)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown speculative_config keys {sorted(map(str, unknown))}")
        if "method" not in d:
            raise ValueError(f"speculative_config needs a 'method', one of {METHODS}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"speculative method {self.method!r} is not available; choose one of {METHODS}")
        check_int("num_speculative_tokens", self.num_speculative_tokens, 1, 16)
        if self.model is not None:
            check_text("speculative_config model", self.model, allow_empty=False)
        check_int("draft_num_layers", self.draft_num_layers, 1, optional=True)
        check_int("tree_width", self.tree_width, 1, 63)
        if self.tree_width * self.num_speculative_tokens > 63:
            raise ValueError("tree_width * num_speculative_tokens must be at most 63 (a tree of 64 nodes)")
        check_int("tree_topk", self.tree_topk, 1, 64, optional=True)
        check_int("ngram_min", self.ngram_min, 1, 64)
        check_int("ngram_max", self.ngram_max, self.ngram_min, 64)
        check_bool("adaptive", self.adaptive)


@dataclass(slots=True)
class SpecMetrics:
    """Engine-wide totals over every verified step."""
    num_forwards: int = 0            # request-steps that verified a tree with >= 1 draft node
    num_drafted: int = 0
    num_accepted: int = 0
    num_emitted: int = 0             # accepted + bonus over those steps
    accepted_per_depth: list[int] = field(default_factory=list)
    drafted_per_depth: list[int] = field(default_factory=list)
    num_grammar_pruned: int = 0      # draft tokens dropped because the grammar rejects them
    num_grammar_forced: int = 0      # draft tokens added because the grammar forces them (jump-forward)
    grammar_time_s: float = 0.0      # CPU time in grammar drafting, tree masks and matcher advance
    num_grammar_tokens: int = 0      # tokens emitted under a grammar (grammar_time_s / this = per token)

    @property
    def tau(self) -> float:
        return self.num_emitted / self.num_forwards if self.num_forwards else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted / self.num_drafted if self.num_drafted else 0.0

    def record(self, depths: list[int], num_accepted: int) -> None:
        self.num_forwards += 1
        self.num_drafted += len(depths) - 1
        self.num_accepted += num_accepted
        self.num_emitted += num_accepted + 1
        count_per_depth(self.drafted_per_depth, self.accepted_per_depth, max(depths), num_accepted)


def count_per_depth(drafted: list[int], accepted: list[int], max_depth: int, num_accepted: int) -> None:
    """One verified tree: every depth up to `max_depth` was drafted, the first `num_accepted`
    were accepted. Mutates both per-depth counters (grown as needed)."""
    for d in range(max_depth):
        if len(drafted) <= d:
            drafted.append(0)
            accepted.append(0)
        drafted[d] += 1
        accepted[d] += int(d < num_accepted)
