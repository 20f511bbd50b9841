"""Sampler: turns target logits into the distribution a request asked for, and samples it.

Order (HF / vLLM): penalties and logit bias on the logits, then (for sampled
rows) temperature, top-k, top-p and min-p on the probabilities. Greedy rows
take the argmax after penalties and bias. The same functions build the target
distribution at every draft-tree node in the verifier, so speculation samples
from exactly what plain decoding would.

Each row carries its own token history (for tree nodes: the request's tokens
plus the path to the node), which the penalties read.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from specdec.outputs import Logprob
from specdec.sampling_params import SamplingParams


class NoValidTokenError(ValueError):
    """A row's distribution has no finite mass: the request cannot go on (its error, not the engine's)."""


def check_finite_mass(logits: torch.Tensor, num_rows_needing_mass: int | None = None) -> None:
    """logits: (N, V) after bias / penalties / grammar mask. No row may hold NaN or +inf, and the
    first `num_rows_needing_mass` rows (all by default) must leave a token to pick (at least one
    finite value). Raises NoValidTokenError.

    In a draft tree only the root's row is sure to be used: a node whose token the grammar
    rejects gets an all -inf row, but it is never accepted (its parent's row masks its token),
    so the verifier passes 1 there."""
    # one reduction instead of three full passes: max is NaN if any entry is NaN, +inf if any
    # is +inf, and -inf only when the whole row is -inf
    row_max = logits.amax(dim=-1)
    if bool(torch.isnan(row_max).any()) or bool((row_max == float("inf")).any()):
        raise NoValidTokenError("the logits contain NaN or +inf")
    if bool((row_max[:num_rows_needing_mass] == float("-inf")).any()):
        raise NoValidTokenError("no token is allowed: every logit is -inf "
                                "(logit_bias or the grammar mask excludes the whole vocabulary)")


@dataclass(slots=True)
class RowContext:
    """What the sampler needs to know about one logits row."""
    params: SamplingParams
    prompt_ids: list[int]
    output_ids: list[int]          # tokens generated so far (+ draft path for tree nodes)
    generator: torch.Generator | None


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """Disallow tokens whose bit is 0. logits: (N, V); bitmask: [N, ceil(V/32)] int32 packed
    as xgrammar fills it (bit j % 32 of word j // 32 = token j allowed). Returns a new tensor."""
    from specdec.attention import unpack_tree_mask
    allowed = unpack_tree_mask(bitmask, logits.shape[1])
    return logits.masked_fill(~allowed, float("-inf"))


def apply_penalties_and_bias(logits: torch.Tensor, rows: list[RowContext]) -> torch.Tensor:
    """logits: (N, V) fp32, modified in place and returned."""
    for i, row in enumerate(rows):
        p = row.params
        if p.has_penalties:
            out = torch.tensor(row.output_ids, dtype=torch.long, device=logits.device)
            if p.repetition_penalty != 1.0:
                seen = torch.tensor(sorted(set(row.prompt_ids) | set(row.output_ids)),
                                    dtype=torch.long, device=logits.device)
                vals = logits[i, seen]
                logits[i, seen] = torch.where(vals > 0, vals / p.repetition_penalty,
                                              vals * p.repetition_penalty)
            if out.numel() and (p.frequency_penalty or p.presence_penalty):
                counts = torch.bincount(out, minlength=logits.shape[1]).to(logits.dtype)
                logits[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
        if p.logit_bias:
            ids = torch.tensor(list(p.logit_bias.keys()), dtype=torch.long, device=logits.device)
            bias = torch.tensor(list(p.logit_bias.values()), dtype=logits.dtype, device=logits.device)
            logits[i, ids] += bias
    return logits


def probs_from_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """One row's processed logits (V,) -> sampling distribution (V,) fp32.

    Greedy (temperature 0) is the one-hot of the argmax, so the verifier treats
    greedy and sampled rows alike.
    """
    if params.is_greedy:
        probs = torch.zeros_like(logits, dtype=torch.float32)
        probs[logits.argmax()] = 1.0
        return probs
    # a tiny temperature or repetition penalty overflows fp32 to inf, and softmax(inf - inf) is NaN:
    # clamp to the largest finite value so the distribution stays the intended near-one-hot
    logits = torch.nan_to_num(logits.float() / params.temperature, nan=float("-inf"),
                              posinf=torch.finfo(torch.float32).max, neginf=float("-inf"))
    if params.top_k > 0 and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= params.top_p
        drop_sorted[0] = False     # also when top_p is below fp32's smallest value (it rounds to 0)
        probs = probs.masked_fill(torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted), 0.0)
    if params.min_p > 0.0:
        probs = probs.masked_fill(probs < params.min_p * probs.max(), 0.0)
    total = probs.sum()
    if not bool(torch.isfinite(total)) or float(total) <= 0.0:
        raise NoValidTokenError("the sampling distribution has no finite mass")
    return probs / total


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """Draw one token id from a (V,) distribution."""
    return int(torch.multinomial(probs, 1, generator=generator).item())


def target_probs(logits: torch.Tensor, rows: list[RowContext]) -> torch.Tensor:
    """(N, V) raw logits -> (N, V) target distributions after every sampling setting.

    Row 0 (a tree's root, always used) must have mass, else NoValidTokenError. A later row
    without mass (a draft node the grammar rejects: never accepted, so never sampled from)
    comes back all zero."""
    processed = apply_penalties_and_bias(logits.float().clone(), rows)
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(probs_from_logits(processed[i], row.params))
        except NoValidTokenError:
            if i == 0:
                raise
            out.append(torch.zeros_like(processed[i]))
    return torch.stack(out)


def make_logprob(raw_logits: torch.Tensor, token_id: int, num_top: int) -> Logprob:
    """Logprob of the emitted token under the model's raw distribution, plus the top-k."""
    logprobs = torch.log_softmax(raw_logits.float(), dim=-1)
    top: dict[int, float] = {}
    if num_top > 0:
        vals, ids = logprobs.topk(num_top)
        top = {int(t): float(v) for t, v in zip(ids, vals)}
    return Logprob(token_id, float(logprobs[token_id]), top)
