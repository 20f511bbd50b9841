"""The reduced draft vocabulary: the most frequent target tokens in the target's own answers.

EAGLE-3 / vLLM convention: the kept target ids are sorted ascending; draft id i maps to target
id `i + d2t[i]` (an offset table), and `t2d[target id]` is the draft id or -1.
"""
from __future__ import annotations

import torch


def build_vocab(answer_tokens: list[torch.Tensor], target_vocab: int, size: int,
                always: tuple[int, ...] = ()) -> tuple[torch.Tensor, float]:
    """(d2t [size] int64, coverage): coverage = share of answer tokens inside the vocabulary.

    `always` ids (e.g. end-of-turn) are kept whatever their count. Ties go to the lower id.
    """
    if not 1 <= size <= target_vocab:
        raise ValueError(f"draft_vocab_size must be in [1, {target_vocab}], got {size}")
    counts = torch.zeros(target_vocab, dtype=torch.int64)
    for t in answer_tokens:
        counts += torch.bincount(t.long(), minlength=target_vocab)
    score = counts.double() - torch.arange(target_vocab, dtype=torch.float64) * 1e-9  # ties: lower id
    score[list(always)] = float("inf")
    kept = torch.sort(torch.topk(score, size).indices).values
    total = int(counts.sum())
    coverage = float(counts[kept].sum()) / total if total else 0.0
    return kept - torch.arange(size), coverage


def target_to_draft(d2t: torch.Tensor, target_vocab: int) -> torch.Tensor:
    """[target_vocab] int64: draft id of each target id, -1 where it is not in the vocabulary."""
    t2d = torch.full((target_vocab,), -1, dtype=torch.int64)
    t2d[torch.arange(len(d2t)) + d2t] = torch.arange(len(d2t))
    return t2d
