"""Training loop: AdamW, warmup + cosine, resumable checkpoints, held-out accuracy, export.

A checkpoint (head weights, optimizer, step) is written atomically every `save_every` steps
and when the time budget runs out; a rerun resumes from it. The data order of epoch e is a
permutation seeded by (seed, e), so a resumed run sees the same order as an uninterrupted one.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from drafts.eagle_head import EagleHead
from drafts.train.ttt import Pack, ttt_loss


@dataclass(slots=True)
class TrainSettings:
    epochs: float = 2.0
    lr: float = 5e-4
    warmup: int = 30
    ttt_steps: int = 3
    grad_clip: float = 0.5
    save_every: int = 25
    minutes: float = 30.0
    seed: int = 0


def lr_at(step: int, total: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    frac = (step - s.warmup) / max(1, total - s.warmup)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _order(num_packs: int, epoch: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(num_packs, generator=g).tolist()


def train(head: EagleHead, embed: torch.Tensor, rope, packs: list[Pack], val_packs: list[Pack],
          ckpt_path: Path, s: TrainSettings) -> dict:
    """Train `head` in place (resuming from ckpt_path if present). Returns a summary dict."""
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, betas=(0.9, 0.95), weight_decay=0.0)
    total = max(1, int(s.epochs * len(packs)))
    step, elapsed_before = 0, 0.0
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        head.load_state_dict(ck["head"])
        opt.load_state_dict(ck["opt"])
        step, elapsed_before = ck["step"], ck.get("elapsed_s", 0.0)
    t0 = time.monotonic()

    def save():
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"head": head.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed_s": elapsed_before + time.monotonic() - t0}, tmp)
        os.replace(tmp, ckpt_path)

    bar = tqdm(total=total, initial=step, desc="train", unit="pack")
    head.train()
    stopped_early = False
    while step < total:
        if time.monotonic() - t0 > s.minutes * 60:
            stopped_early = True
            break
        epoch, i = divmod(step, len(packs))
        pack = packs[_order(len(packs), epoch, s.seed)[i]]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, s)
        loss, stats = ttt_loss(head, embed, pack, rope, s.ttt_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}",
                        acc=" ".join(f"{c / n:.2f}" if n else "-" for c, n in stats))
        if step % s.save_every == 0:
            save()
    bar.close()
    save()
    head.eval()
    return {"steps": step, "planned_steps": total, "stopped_by_time_budget": stopped_early,
            "train_seconds": elapsed_before + time.monotonic() - t0,
            "val_top1_per_step": evaluate(head, embed, rope, val_packs, s.ttt_steps)}


@torch.no_grad()
def evaluate(head: EagleHead, embed: torch.Tensor, rope, packs: list[Pack], steps: int) -> list[float]:
    """Held-out top-1 accuracy per unrolled step (step j = tree depth j + 1)."""
    correct, count = [0] * steps, [0] * steps
    for pack in packs:
        _, stats = ttt_loss(head, embed, pack, rope, steps)
        for j, (c, n) in enumerate(stats):
            correct[j] += c
            count[j] += n
    return [c / n if n else 0.0 for c, n in zip(correct, count)]
