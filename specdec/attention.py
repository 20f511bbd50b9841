"""Attention over the paged KV pool: metadata and the backend interface.

Every step attends the flattened new tokens of all scheduled requests
(prefill-chunk tokens or draft-tree nodes) to each request's cached prefix
(read through its block table) plus its own new tokens. New tokens of request
b are visible to each other causally, or, where `is_tree[b]`, through the
packed ancestor mask: bit j of `tree_mask[t]` (word j // 32, bit j % 32) set
means new token j of the same request is visible to flat query row t.

The new tokens' K/V are written to `slot_mapping` first; they occupy KV
positions `seq_lens[b] - q_len_b ... seq_lens[b] - 1` of their request.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAD_ID = -1  # padding in block tables and slot mappings


@dataclass(slots=True)
class AttentionMetadata:
    cu_seqlens_q: torch.Tensor       # [B+1] int32, prefix sums of new tokens per request
    seq_lens: torch.Tensor           # [B] int32, KV length incl. the new tokens
    block_tables: torch.Tensor       # [B, max_blocks] int32, PAD_ID past the end
    slot_mapping: torch.Tensor       # [T] int64, cache slot of each new token (PAD_ID = skip)
    tree_mask: torch.Tensor | None   # [T, ceil(max_tree/32)] int32 packed ancestor bits
    is_tree: torch.Tensor | None     # [B] int32, 1 = use tree_mask rows, 0 = causal
    # Host copies so the torch path never syncs on device tensors.
    q_lens_cpu: list[int]
    seq_lens_cpu: list[int]
    block_tables_cpu: list[list[int]]
    is_tree_cpu: list[bool]
    # built by TorchAttention on the first layer and reused by the others (same step)
    padded: "PaddedBatch | None" = None
    rows: "object | None" = None          # row_attention.RowBatch for decode / tree rows
    skip_slots: bool | None = None        # slot_mapping holds PAD_ID entries (set on first use)

    @property
    def num_tokens(self) -> int:
        return int(self.slot_mapping.shape[0])


def unpack_tree_mask(packed: torch.Tensor, n: int) -> torch.Tensor:
    """[rows, W] int32 packed bits -> [rows, n] bool (bit j of word j // 32)."""
    j = torch.arange(n, device=packed.device)
    words = packed[:, j // 32].to(torch.int64) & 0xFFFFFFFF
    return ((words >> (j % 32)) & 1).bool()


def pack_tree_mask(mask: torch.Tensor) -> torch.Tensor:
    """[rows, n] bool -> [rows, ceil(n/32)] int32 packed (inverse of unpack_tree_mask)."""
    rows, n = mask.shape
    num_words = (n + 31) // 32
    padded = torch.zeros(rows, num_words * 32, dtype=torch.int64, device=mask.device)
    padded[:, :n] = mask.to(torch.int64)
    weights = (1 << torch.arange(32, dtype=torch.int64, device=mask.device))
    words = (padded.view(rows, num_words, 32) * weights).sum(-1)
    # reinterpret as signed int32 (bit 31 is the sign bit)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32)


@dataclass(slots=True)
class PaddedBatch:
    """Index maps and the dense visibility mask for one batched SDPA over all requests."""
    pad_index: torch.Tensor     # [B * max_q] int64: flat query row feeding each padded row (T = dummy)
    unpad_index: torch.Tensor   # [T] int64: padded row holding each flat query row
    mask: torch.Tensor          # [B, 1, max_q, max_s] bool
    gather_blocks: torch.Tensor  # [B, max_blocks] int64 (PAD clamped to block 0; masked out)
    key_valid: torch.Tensor     # [B, 1, max_s, 1] bool: key position < seq_len
    max_q: int
    max_s: int


# Above this many new tokens in one request, per-request attention beats padding everyone.
MAX_BATCHED_Q = 64


def build_padded_batch(meta: AttentionMetadata, block_size: int, device: torch.device) -> PaddedBatch:
    B = len(meta.q_lens_cpu)
    max_q = max(meta.q_lens_cpu)
    max_blocks = max((s + block_size - 1) // block_size for s in meta.seq_lens_cpu)
    max_s = max_blocks * block_size
    T = sum(meta.q_lens_cpu)
    pad_index = torch.full((B, max_q), T, dtype=torch.int64)
    mask = torch.zeros(B, max_q, max_s, dtype=torch.bool)
    start = 0
    for b, (q_len, seq_len) in enumerate(zip(meta.q_lens_cpu, meta.seq_lens_cpu)):
        pad_index[b, :q_len] = torch.arange(start, start + q_len)
        ctx = seq_len - q_len
        mask[b, :q_len, :ctx] = True
        if meta.is_tree_cpu[b]:
            mask[b, :q_len, ctx:seq_len] = unpack_tree_mask(meta.tree_mask[start:start + q_len].cpu(), q_len)
        else:
            mask[b, :q_len, ctx:seq_len] = torch.ones(q_len, q_len, dtype=torch.bool).tril()
        mask[b, q_len:, 0] = True          # padded rows see something (no NaN); discarded anyway
        start += q_len
    flat = pad_index.flatten()
    unpad = torch.empty(T, dtype=torch.int64)
    valid = flat < T
    unpad[flat[valid]] = torch.nonzero(valid).flatten()
    blocks = meta.block_tables[:, :max_blocks].to(torch.int64).clamp(min=0)
    key_valid = torch.arange(max_s).unsqueeze(0) < torch.tensor(meta.seq_lens_cpu).unsqueeze(1)
    return PaddedBatch(flat.to(device), unpad.to(device), mask.unsqueeze(1).to(device), blocks,
                       key_valid[:, None, :, None].to(device), max_q, max_s)


class TorchAttention:
    """Reference attention backend: gathers each request's KV through its block table.

    Used on CPU; the Triton kernel (kernels/tree_attention.py) implements the same
    contract on CUDA. Batches of short segments (decode, draft trees) run as one
    padded SDPA per layer with a mask built once per step; a batch with a long
    prefill chunk runs request by request so nobody is padded to its length.
    """

    def store_kv(self, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                 v_cache: torch.Tensor, meta: AttentionMetadata) -> None:
        # k, v: [T, Hkv, D]; caches: [num_blocks, block_size, Hkv, D]
        slots = meta.slot_mapping
        if meta.skip_slots is None:           # once per step, not per layer
            meta.skip_slots = bool((slots < 0).any())
        if meta.skip_slots:                   # PAD_ID slots are skipped
            keep = slots >= 0
            slots, k, v = slots[keep], k[keep], v[keep]
        k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slots, k.to(k_cache.dtype))
        v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slots, v.to(v_cache.dtype))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                scale: float) -> torch.Tensor:
        """q: [T, Hq, D]; k, v: [T, Hkv, D] (new tokens). Returns [T, Hq, D]. Mutates the caches.

        Decode tokens and draft trees go through the row-invariant path (row_attention.py),
        so a verify step computes every row exactly as plain decoding would; prefill chunks
        go through SDPA.
        """
        from specdec.row_attention import build_row_batch, is_row_segment, row_attention

        self.store_kv(k, v, k_cache, v_cache, meta)
        block_size = k_cache.shape[1]
        row_segs = [b for b in range(len(meta.q_lens_cpu)) if is_row_segment(meta, b)]
        if row_segs and meta.rows is None:                # once per step, reused by every layer
            meta.rows = build_row_batch(meta, row_segs, block_size, q.device)
        if len(row_segs) == len(meta.q_lens_cpu):          # the common decode / verify step
            return row_attention(q, k_cache, v_cache, meta.rows, scale)
        out = self._forward_prefill(q, k_cache, v_cache, meta, scale, set(row_segs))
        if row_segs:
            idx = meta.rows.query_index
            out.index_copy_(0, idx, row_attention(q.index_select(0, idx), k_cache, v_cache,
                                                  meta.rows, scale))
        return out

    def _forward_prefill(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                         meta: AttentionMetadata, scale: float, skip: set[int]) -> torch.Tensor:
        """SDPA for the causal prefill segments; rows of segments in `skip` are left unset."""
        block_size = k_cache.shape[1]
        if not skip and len(meta.q_lens_cpu) > 1 and max(meta.q_lens_cpu) <= MAX_BATCHED_Q:
            if meta.padded is None:
                meta.padded = build_padded_batch(meta, block_size, q.device)
            return self._forward_padded(q, k_cache, v_cache, meta.padded, scale)
        out = torch.empty_like(q)
        start = 0
        for b, q_len in enumerate(meta.q_lens_cpu):
            if q_len == 0 or b in skip:
                start += q_len
                continue
            seq_len = meta.seq_lens_cpu[b]
            num_blocks = (seq_len + block_size - 1) // block_size
            blocks = torch.tensor(meta.block_tables_cpu[b][:num_blocks], dtype=torch.long)
            kb = k_cache.index_select(0, blocks).flatten(0, 1)[:seq_len]  # (S, Hkv, D)
            vb = v_cache.index_select(0, blocks).flatten(0, 1)[:seq_len]
            qb = q[start:start + q_len]                                 # (Q, Hq, D)
            mask = self._mask(meta, b, start, q_len, seq_len, q.device)
            o = F.scaled_dot_product_attention(
                qb.transpose(0, 1).unsqueeze(0), kb.transpose(0, 1).unsqueeze(0).to(q.dtype),
                vb.transpose(0, 1).unsqueeze(0).to(q.dtype), attn_mask=mask, scale=scale,
                enable_gqa=True,
            )                                                           # (1, Hq, Q, D)
            out[start:start + q_len] = o[0].transpose(0, 1)
            start += q_len
        return out

    @staticmethod
    def _forward_padded(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                        pb: PaddedBatch, scale: float) -> torch.Tensor:
        B, H, D = pb.mask.shape[0], q.shape[1], q.shape[2]
        q_pad = torch.cat([q, q.new_zeros(1, H, D)]).index_select(0, pb.pad_index)
        q_pad = q_pad.view(B, pb.max_q, H, D).transpose(1, 2)                   # (B, Hq, Q, D)
        # slots past a request's length hold stale data (other requests, rejected drafts,
        # never-written blocks): zero them, since a masked key still multiplies its value
        kb = k_cache[pb.gather_blocks].flatten(1, 2).transpose(1, 2).to(q.dtype)  # (B, Hkv, S, D)
        vb = v_cache[pb.gather_blocks].flatten(1, 2).transpose(1, 2).to(q.dtype)
        kb = kb.masked_fill(~pb.key_valid, 0.0)
        vb = vb.masked_fill(~pb.key_valid, 0.0)
        o = F.scaled_dot_product_attention(q_pad, kb, vb, attn_mask=pb.mask, scale=scale, enable_gqa=True)
        return o.transpose(1, 2).reshape(B * pb.max_q, H, D).index_select(0, pb.unpad_index)

    @staticmethod
    def _mask(meta: AttentionMetadata, b: int, start: int, q_len: int, seq_len: int,
              device: torch.device) -> torch.Tensor | None:
        """[Q, S] bool visibility, or None when every key is visible (single query)."""
        ctx_len = seq_len - q_len
        if meta.is_tree_cpu[b]:
            new = unpack_tree_mask(meta.tree_mask[start:start + q_len], q_len)
        elif q_len == 1:
            return None
        else:
            new = torch.ones(q_len, q_len, dtype=torch.bool, device=device).tril()
        prefix = torch.ones(q_len, ctx_len, dtype=torch.bool, device=device)
        return torch.cat([prefix, new], dim=1)
