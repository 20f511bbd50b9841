"""The multi-step unrolled (training-time test, TTT) loss of EAGLE-3 on packed sequences.

A pack is several sequences laid end to end (row p pairs the target's features of token p
with the embedding of token p+1 and is labelled with token p+2, see drafts/eagle_head.py).
Step 0 feeds the true fused features; step j >= 1 feeds, at row p, the head's own step-(j-1)
output from row p-1, which is what drafting at tree depth j sees. Attention at step j, row p
matches drafting exactly: step-0 keys of rows <= p-j (the committed context) plus the step-i
key of row p-j+i for i = 1..j (the node's ancestors in the tree and itself). Row p is trained
at step j only if it has j rows of context in its sequence; step losses are weighted 0.8**j.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from drafts.eagle_head import EagleHead


@dataclass(slots=True)
class Pack:
    features: torch.Tensor    # [T, n*H] fp16
    next_tokens: torch.Tensor  # [T] int64: token p+1 (its embedding is row p's input)
    labels: torch.Tensor      # [T] int64: draft id of token p+2, -1 = no loss at this row
    positions: torch.Tensor   # [T] int64: row index inside its sequence (rotary position)
    seq_ids: torch.Tensor     # [T] int64
    run: torch.Tensor | None = None   # [T] int64: tokens p-run+2..p+1 are the target's own
                                      # greedy choices; step j trains row p only if run >= j


def make_packs(tokens: list[torch.Tensor], prompt_lens: list[int], features: list[torch.Tensor],
               t2d: torch.Tensor, max_rows: int, argmax: list[torch.Tensor] | None = None) -> list[Pack]:
    """Pack whole sequences (rows 0..T-2 of each) into packs of at most `max_rows` rows.

    On-policy sequences (answer = the target's own greedy output): the label of row p is
    token p+2 where that is an answer token. Off-policy sequences (`argmax` given: the target's
    greedy next token after every position): the label is the target's argmax after token p+1,
    and a row trains at step j only if the j fed tokens before its label agree with the
    target's argmax (so the unrolled chain is one the target would have accepted). Prompt rows
    serve as context only.
    """
    packs, cur = [], []

    def flush():
        if cur:
            packs.append(Pack(*(torch.cat(x) for x in zip(*cur))))
            cur.clear()

    used = 0
    for sid, (tok, plen, feat) in enumerate(zip(tokens, prompt_lens, features)):
        tok = tok.long()
        T = len(tok) - 1                      # rows 0..T-1 pair token p with token p+1
        if T < 2:
            continue
        T = min(T, max_rows)
        rows = torch.arange(T)
        labels = torch.full((T,), -1, dtype=torch.int64)
        if argmax is None:
            tgt = torch.arange(2, T + 1)           # token index p+2 for rows p = 0..T-2
            lab = t2d[tok[tgt]]
            labels[:T - 1] = torch.where(tgt >= plen, lab, torch.full_like(lab, -1))
            run = (rows + 2 - plen).clamp(min=0)   # every answer token is the target's choice
        else:
            best = argmax[sid].long()
            lab = t2d[best[1:T + 1]]               # target's prediction of token p+2
            labels = torch.where(rows + 2 >= plen, lab, torch.full_like(lab, -1))
            agree = torch.zeros(T + 1, dtype=torch.int64)   # agree[q]: token q == argmax after q-1
            q = torch.arange(1, T + 1)
            agree[1:] = ((tok[1:T + 1] == best[:T]) & (q >= plen)).long()
            run = torch.zeros(T, dtype=torch.int64)
            streak = 0
            for p in range(T):                      # consecutive agreeing tokens ending at p+1
                streak = streak + 1 if agree[p + 1] else 0
                run[p] = streak
        if used + T > max_rows:
            flush()
            used = 0
        cur.append((feat[:T], tok[1:T + 1], labels, rows, torch.full((T,), sid), run))
        used += T
    flush()
    return packs


def ttt_loss(head: EagleHead, embed: torch.Tensor, pack: Pack, rope, steps: int, decay: float = 0.8
             ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Weighted loss over `steps` unrolled steps and (correct top-1, counted) per step.

    embed: the target's embedding table [V, H] (frozen). Gradients flow through every step.
    """
    cfg = head.cfg
    T = pack.next_tokens.shape[0]
    group = cfg.num_heads // cfg.num_kv_heads
    scale = cfg.head_dim ** -0.5
    cos_sin = rope.lookup(pack.positions)
    emb = embed[pack.next_tokens]
    idx = torch.arange(T)
    same = pack.seq_ids[:, None] == pack.seq_ids[None, :]
    hidden = head.fuse(pack.features)
    k0 = v0 = None
    step_kv = []                        # (k, v) of steps 1.. (expanded to q heads)
    total = hidden.new_zeros(())
    stats = []
    for j in range(steps):
        if j > 0:
            hidden = torch.roll(a, 1, dims=0)     # row p gets the step-(j-1) output of row p-1
        q, k, v = head.project_qkv(hidden, emb, cos_sin)
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        if j == 0:
            k0, v0 = k, v
        s0 = torch.einsum("thd,shd->hts", q, k0) * scale
        s0 = s0.masked_fill(~(same & (idx[None, :] <= idx[:, None] - j)), float("-inf"))
        extra_k, extra_v = [], []
        for i, (ki, vi) in enumerate(step_kv + ([(k, v)] if j > 0 else []), start=1):
            shift = j - i                           # step-i key of row p - j + i
            extra_k.append(torch.roll(ki, shift, dims=0))
            extra_v.append(torch.roll(vi, shift, dims=0))
        if extra_k:
            sd = torch.stack([(q * ke).sum(-1) for ke in extra_k], dim=-1) * scale   # [T, Hq, j]
            probs = torch.softmax(torch.cat([s0, sd.permute(1, 0, 2)], dim=-1), dim=-1)
            o = torch.einsum("hts,shd->thd", probs[..., :T], v0)
            pd = probs[..., T:].permute(1, 0, 2)                                       # [T, Hq, j]
            o = o + sum(pd[..., i:i + 1] * ve for i, ve in enumerate(extra_v))
        else:
            o = torch.einsum("hts,shd->thd", torch.softmax(s0, dim=-1), v0)
        a = head.finish(hidden, o)
        if j > 0:
            step_kv.append((k, v))
        rows = (pack.labels >= 0) & (pack.positions >= j)
        if pack.run is not None:
            rows &= pack.run >= j
        if not bool(rows.any()):
            stats.append((0, 0))
            continue
        logits = head.logits(a[rows])
        labels = pack.labels[rows]
        total = total + decay ** j * F.cross_entropy(logits, labels)
        stats.append((int((logits.argmax(-1) == labels).sum()), int(labels.numel())))
    return total, stats
