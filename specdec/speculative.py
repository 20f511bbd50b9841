"""speculative_config (vLLM's shape) -> a proposer, and the engine-wide speculation metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specdec.validation import check_bool, check_int, check_text

METHODS = ("ngram", "draft_model")


@dataclass(slots=True)
class SpeculativeConfig:
    method: str                        # "ngram" | "draft_model"
    num_speculative_tokens: int = 4    # tree depth K
    model: str | None = None           # draft checkpoint (draft_model); None = the target's own file
    draft_num_layers: int | None = None  # keep only the first N layers of the draft (self-drafting)
    tree_width: int = 1                # draft_model: frontier per depth; ngram: continuations (paths)
    tree_topk: int | None = None       # draft_model: children proposed per frontier node
    ngram_max: int = 4                 # ngram: longest suffix matched
    ngram_min: int = 2                 # ngram: shortest suffix matched (1-token matches are mostly noise)
    adaptive: bool = True              # shrink the depth while acceptance is low

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


class AdaptiveDepth:
    """Per-request draft depth from an EMA of accepted tokens per step.

    When drafts keep failing, verifying extra nodes costs forward time for
    nothing: the depth follows what recently got accepted (plus one to probe),
    and below `min_gain` accepted tokens per step (about what a few extra
    verified nodes cost, relative to a one-token forward, on a CPU) the request
    stops drafting for `cooldown` steps, then probes again with depth 1.
    """

    def __init__(self, max_depth: int, alpha: float = 0.5, min_gain: float = 0.5, cooldown: int = 8):
        self.max_depth, self.alpha = max_depth, alpha
        self.min_gain, self.cooldown = min_gain, cooldown

    def depth(self, ema: float | None) -> int:
        if ema is None:
            return self.max_depth
        return max(1, min(self.max_depth, int(ema + 1.5)))

    def skip_steps(self, ema: float) -> int:
        """Steps to decode plainly after an update that left the EMA at `ema`."""
        return self.cooldown if ema < self.min_gain else 0

    def update(self, ema: float | None, num_accepted: int) -> float:
        return float(num_accepted) if ema is None else (1 - self.alpha) * ema + self.alpha * num_accepted
