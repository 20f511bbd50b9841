"""Row-invariant attention for decode and verify rows: greedy speculation == plain, bit for bit.

A query row at position p (a decode token, or a draft-tree node at depth d with
p = num_computed + d) attends to the keys of positions 0..p of its own sequence:
the committed context, then its tree ancestors. Plain decoding computes the same
row later, one token at a time, over the same keys. For the two to agree exactly,
the row's arithmetic must not depend on anything else in the step: not on its
sibling rows, not on where the tree put its ancestors in the pool, not on how much
padding the batch needed. Measured on these CPUs (tests/test_row_attention.py):
a GEMM's output element depends on M (the number of query rows in the call), but
not on N or on the batch count, and a trailing run of zero weights in the
reduction dimension leaves it unchanged. So each row is computed as

    keys   = pool[slots of positions 0..p, in position order] + zero padding   (one "buffer")
    scores = bmm(q[row, kv head] : [G, D], keys^T : [D, S_pad])                 M = G always
    probs  = exp(scores - max) with padding masked to exactly 0
    out    = bmm(probs : [G, S_pad], values : [S_pad, D]) / bmm(probs, ones)

with one batch entry per (row, kv head): every row's numbers come from calls of the
same M over the same keys, whatever the step looks like. The cost is a per-row copy
of the row's keys and values (the price of exactness; prefill chunks do not come
here, they use SDPA).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from specdec.attention import AttentionMetadata, unpack_tree_mask

KEY_PAD = 64  # buffers are padded to a multiple of this many keys


@dataclass(slots=True)
class RowBatch:
    """Per-step index maps for the row path (built once, reused by every layer)."""
    query_index: torch.Tensor   # [R] int64: flat query row (into the step's T rows) of each row
    key_slots: torch.Tensor     # [R, S_pad] int64: pool slot of each key position (0 = padding)
    key_valid: torch.Tensor     # [R, 1, 1, S_pad] bool: key position < visible length
    lengths: torch.Tensor       # [R] int64: visible keys of each row


def is_row_segment(meta: AttentionMetadata, b: int) -> bool:
    """Decode tokens and draft trees take the row path; prefill chunks (causal, q > 1) do not."""
    return meta.is_tree_cpu[b] or meta.q_lens_cpu[b] == 1


def build_row_batch(meta: AttentionMetadata, segments: list[int], block_size: int,
                    device: torch.device) -> RowBatch:
    """Key positions of every query row of the row segments `segments` (indices into meta)."""
    cu = [0]
    for q_len in meta.q_lens_cpu:
        cu.append(cu[-1] + q_len)
    query_index, row_slots = [], []
    for b in segments:
        q_len, seq_len = meta.q_lens_cpu[b], meta.seq_lens_cpu[b]
        start = seq_len - q_len                      # committed context length
        table = torch.tensor(meta.block_tables_cpu[b][:(seq_len + block_size - 1) // block_size],
                             dtype=torch.int64)
        slots = (table[:, None] * block_size + torch.arange(block_size)).flatten()[:seq_len]
        if meta.is_tree_cpu[b]:
            ancestors = unpack_tree_mask(meta.tree_mask[cu[b]:cu[b + 1]].cpu(), q_len)  # [q, q] bool
        else:   # causal: row i of the chunk sees the chunk's rows 0..i (decode: q_len = 1)
            ancestors = torch.ones(q_len, q_len, dtype=torch.bool).tril()
        for i in range(q_len):
            nodes = torch.nonzero(ancestors[i]).flatten()   # root..i in depth order (parents[i] < i)
            row_slots.append(torch.cat([slots[:start], slots[start + nodes]]))
            query_index.append(cu[b] + i)
    return rows_from_slots(row_slots, query_index, device)


def rows_from_slots(row_slots: list[torch.Tensor], query_index: list[int], device) -> RowBatch:
    """A RowBatch from each row's key slots in position order (int64 [S_r] each)."""
    s_pad = -(-max(len(s) for s in row_slots) // KEY_PAD) * KEY_PAD
    key_slots = torch.zeros(len(row_slots), s_pad, dtype=torch.int64)
    lengths = torch.tensor([len(s) for s in row_slots])
    for r, s in enumerate(row_slots):
        key_slots[r, :len(s)] = s
    key_valid = torch.arange(s_pad)[None, :] < lengths[:, None]
    return RowBatch(torch.tensor(query_index, dtype=torch.int64, device=device), key_slots.to(device),
                    key_valid[:, None, None, :].to(device), lengths.to(device))


def row_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, rows: RowBatch,
                  scale: float) -> torch.Tensor:
    """q: [R, Hq, D] (the rows' queries, in RowBatch order); caches [blocks, block_size, Hkv, D]
    holding every visible key (this step's new ones already stored). Returns [R, Hq, D] in
    q's dtype. Reads only; computes in float32."""
    R, Hq, D = q.shape
    Hkv = k_cache.shape[2]
    G = Hq // Hkv
    S = rows.key_slots.shape[1]
    # gather straight into (Hkv, R, S, D), contiguous: one copy, and the same memory layout for
    # every R (a GEMM over a differently strided operand would round differently)
    keys = k_cache.view(-1, Hkv, D).transpose(0, 1)[:, rows.key_slots].float()     # (Hkv, R, S, D)
    values = v_cache.view(-1, Hkv, D).transpose(0, 1)[:, rows.key_slots].float()   # (Hkv, R, S, D)
    valid = rows.key_valid                                      # (R, 1, 1, S)
    # padding slots point at slot 0: finite data (the pool starts zeroed and only ever holds
    # finite K/V), so a masked position adds exactly probability 0 * value = 0
    qh = q.float().view(R, Hkv, G, D).transpose(0, 1).contiguous().view(Hkv * R, G, D)
    kt = keys.view(Hkv * R, S, D).transpose(1, 2)                                  # (Hkv*R, D, S)
    scores = torch.bmm(qh, kt).view(Hkv, R, G, S) * scale
    scores = scores.masked_fill(~valid.view(1, R, 1, S), float("-inf"))
    probs = torch.exp(scores - scores.amax(-1, keepdim=True))               # masked -> exactly 0
    probs = probs.view(Hkv * R, G, S)
    out = torch.bmm(probs, values.view(Hkv * R, S, D))                      # (Hkv*R, G, D)
    out = out / probs.sum(-1, keepdim=True)
    return out.view(Hkv, R, G, D).transpose(0, 1).reshape(R, Hq, D).to(q.dtype)


def causal_rows(meta: AttentionMetadata, block_size: int, device) -> RowBatch:
    """RowBatch for segments that are all causal (row i of a chunk sees its sequence's keys up to
    itself), built with a few tensor ops per segment instead of per row (EAGLE's catch-up)."""
    tables, lengths = [], []
    for b, (q_len, seq_len) in enumerate(zip(meta.q_lens_cpu, meta.seq_lens_cpu)):
        table = torch.tensor(meta.block_tables_cpu[b][:(seq_len + block_size - 1) // block_size],
                             dtype=torch.int64)
        tables.append((table[:, None] * block_size + torch.arange(block_size)).flatten()[:seq_len])
        lengths.append(torch.arange(seq_len - q_len + 1, seq_len + 1))
    lengths = torch.cat(lengths)
    s_pad = -(-max(meta.seq_lens_cpu) // KEY_PAD) * KEY_PAD
    key_slots = torch.zeros(len(lengths), s_pad, dtype=torch.int64)
    r = 0
    for slots, q_len in zip(tables, meta.q_lens_cpu):
        key_slots[r:r + q_len, :len(slots)] = slots
        r += q_len
    key_valid = torch.arange(s_pad)[None, :] < lengths[:, None]
    key_slots = key_slots * key_valid                        # padding points at slot 0
    return RowBatch(torch.arange(len(lengths), device=device), key_slots.to(device),
                    key_valid[:, None, None, :].to(device), lengths.to(device))
