"""Writing new K/V into the paged pool, and committing accepted tree nodes' K/V.

`store_kv` scatters the new tokens' K/V of one layer to their cache slots
(before attention reads them). `commit_kv` runs after verification: the K/V of
the accepted tree nodes were written at speculative slots and must move to the
committed positions right after the prefix, for every layer of every model
sharing the block ids (target and draft). Both have pure-torch `*_ref` twins.

A slot is `block_id * block_size + offset`; PAD_ID (-1) means "skip".
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

PAD_ID = -1


# --------------------------------------------------------------------------- store

@triton.jit
def _store_kv_kernel(k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr, num_kv_heads,
                     stride_kt, stride_kh, stride_vt, stride_vh,
                     stride_kc_slot, stride_kc_h, stride_vc_slot, stride_vc_h,
                     HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program per new token: copy its [Hkv, D] K and V rows to the slot."""
    t = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + t).to(tl.int64)
    if slot < 0:  # PAD_ID: padding token, nothing to store
        return
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_h < num_kv_heads)[:, None] & (offs_d < HEAD_DIM)[None, :]
    t64 = t.to(tl.int64)
    k = tl.load(k_ptr + t64 * stride_kt + offs_h[:, None] * stride_kh + offs_d[None, :], mask=mask)
    v = tl.load(v_ptr + t64 * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :], mask=mask)
    tl.store(k_cache_ptr + slot * stride_kc_slot + offs_h[:, None] * stride_kc_h + offs_d[None, :],
             k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + slot * stride_vc_slot + offs_h[:, None] * stride_vc_h + offs_d[None, :],
             v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def _slot_strides(cache: torch.Tensor) -> tuple[int, int]:
    """(slot, head) strides of a [num_blocks, block_size, Hkv, D] cache.

    Slots are addressed as block * block_size + offset, so the block stride
    must equal block_size * offset stride (true for any view of a KVPool).
    """
    assert cache.stride(0) == cache.shape[1] * cache.stride(1), \
        "cache blocks must be laid out as consecutive slots"
    return cache.stride(1), cache.stride(2)


def store_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Scatter new tokens' K/V to their cache slots.

    Parameters
    ----------
    k, v : [T, Hkv, D] any float dtype, last dim contiguous
        K/V of the new tokens (cast to the cache dtype on store).
    k_cache, v_cache : [num_blocks, block_size, Hkv, D]
        One layer's caches. Mutated: rows at the given slots are overwritten.
    slot_mapping : [T] int32 or int64
        Cache slot of each token; PAD_ID (-1) = skip. Slots must be unique.

    No host sync; CUDA-graph capturable.
    """
    assert k.dim() == 3 and k.shape == v.shape, "k, v must be [T, Hkv, D]"
    assert k_cache.dim() == 4 and k_cache.shape == v_cache.shape
    num_tokens, num_kv_heads, head_dim = k.shape
    assert k_cache.shape[2:] == (num_kv_heads, head_dim), \
        f"k {tuple(k.shape)} does not fit cache {tuple(k_cache.shape)}"
    assert slot_mapping.shape == (num_tokens,) and slot_mapping.is_contiguous()
    assert slot_mapping.dtype in (torch.int32, torch.int64)
    for name, t in (("k", k), ("v", v), ("k_cache", k_cache), ("v_cache", v_cache)):
        assert t.stride(-1) == 1, f"{name} must have a contiguous last dim"
        assert t.device == k.device and slot_mapping.device == k.device
    if num_tokens == 0:
        return
    kc_slot, kc_h = _slot_strides(k_cache)
    vc_slot, vc_h = _slot_strides(v_cache)
    _store_kv_kernel[(num_tokens,)](
        k, v, k_cache, v_cache, slot_mapping, num_kv_heads,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), kc_slot, kc_h, vc_slot, vc_h,
        HEAD_DIM=head_dim, BLOCK_H=triton.next_power_of_2(num_kv_heads),
        BLOCK_D=triton.next_power_of_2(head_dim), num_warps=4,
    )


def store_kv_ref(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 slot_mapping: torch.Tensor) -> None:
    """Pure-torch `store_kv` (same arguments; mutates the caches)."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    k_cache.view(-1, *k_cache.shape[2:])[slots] = k[keep].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = v[keep].to(v_cache.dtype)


# --------------------------------------------------------------------------- commit

@triton.jit
def _commit_kv_kernel(pool_ptr, src_slots_ptr, dst_slots_ptr, num_pairs, row_len,
                      stride_plane, stride_slot,
                      BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Gather-then-scatter of every (src, dst) pair in one (layer, K|V) plane.

    One program owns columns [c0, c0 + BLOCK_C) of one plane, across ALL pairs.
    It loads every source row first, waits at a CTA barrier, then stores: no
    store can overwrite a source row that another thread of the same program
    has yet to read, and no other program touches these addresses. Hence the
    result is that of `x[dst] = x[src].clone()` whatever the overlap.
    """
    plane = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_p = tl.arange(0, BLOCK_P)
    p_mask = offs_p < num_pairs
    src = tl.load(src_slots_ptr + offs_p, mask=p_mask, other=-1).to(tl.int64)
    dst = tl.load(dst_slots_ptr + offs_p, mask=p_mask, other=-1).to(tl.int64)
    keep = (src >= 0) & (dst >= 0)                                  # PAD_ID pairs are skipped
    col_mask = offs_c < row_len
    mask = keep[:, None] & col_mask[None, :]
    base = pool_ptr + plane * stride_plane
    rows = tl.load(base + src[:, None] * stride_slot + offs_c[None, :], mask=mask)
    tl.debug_barrier()  # all gathers of this program land before any scatter
    tl.store(base + dst[:, None] * stride_slot + offs_c[None, :], rows, mask=mask)


def _check_pairs(src_slots: torch.Tensor, dst_slots: torch.Tensor) -> None:
    assert src_slots.dim() == 1 and src_slots.shape == dst_slots.shape, \
        "src_slots and dst_slots must be [N]"
    assert src_slots.dtype in (torch.int32, torch.int64) and dst_slots.dtype == src_slots.dtype
    assert src_slots.is_contiguous() and dst_slots.is_contiguous()


def commit_kv(pools: list[torch.Tensor], src_slots: torch.Tensor,
              dst_slots: torch.Tensor) -> None:
    """Copy the K/V at each src slot to its dst slot, for every layer of every pool.

    Parameters
    ----------
    pools : list of [num_layers, 2, num_blocks, block_size, Hkv, D] tensors
        `KVPool.kv`: target and draft pools may differ in num_layers, Hkv, D
        and dtype but share the slot space (same num_blocks * block_size).
        Mutated: rows at dst slots are overwritten. Must be contiguous.
    src_slots, dst_slots : [N] int32 or int64, same device
        Pairs (src_slots[i] -> dst_slots[i]). A pair with either side PAD_ID
        (-1) is skipped.

    Overlap rule (guaranteed): the result equals gathering every src row first
    and then scattering, i.e. `x[dst] = x[src].clone()`. So a dst may equal
    another pair's src in any order (compaction of accepted nodes towards the
    prefix, dst <= src, or any permutation). dst slots must be unique; where
    two pairs share a dst the winner is unspecified.

    Launches: one kernel per pool (target and draft have different shapes and
    dtypes, so a single launch would need raw pointer tables). Each launch has
    2 * num_layers x ceil(Hkv * D / BLOCK_C) programs, each handling all N
    pairs for its columns. No host sync; CUDA-graph capturable.
    """
    _check_pairs(src_slots, dst_slots)
    num_pairs = src_slots.shape[0]
    if num_pairs == 0:
        return
    block_p = triton.next_power_of_2(num_pairs)
    for pool in pools:
        assert pool.dim() == 6 and pool.shape[1] == 2, \
            f"pool must be [num_layers, 2, num_blocks, block_size, Hkv, D], got {tuple(pool.shape)}"
        assert pool.is_contiguous(), "pool must be contiguous"
        assert pool.device == src_slots.device
        num_layers, _, num_blocks, block_size, num_kv_heads, head_dim = pool.shape
        row_len = num_kv_heads * head_dim
        # Columns per program: the whole [N, BLOCK_C] tile is held at once for
        # the gather-then-scatter, so shrink BLOCK_C as N grows (>= 16 wide).
        block_c = min(triton.next_power_of_2(row_len), max(16, 8192 // block_p))
        grid = (num_layers * 2, triton.cdiv(row_len, block_c))
        _commit_kv_kernel[grid](
            pool, src_slots, dst_slots, num_pairs, row_len,
            num_blocks * block_size * row_len, row_len,
            BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4 if block_p * block_c <= 4096 else 8,
        )


def commit_kv_ref(pools: list[torch.Tensor], src_slots: torch.Tensor,
                  dst_slots: torch.Tensor) -> None:
    """Pure-torch `commit_kv` (same arguments, same gather-then-scatter rule)."""
    _check_pairs(src_slots, dst_slots)
    keep = (src_slots >= 0) & (dst_slots >= 0)
    src, dst = src_slots[keep].long(), dst_slots[keep].long()
    for pool in pools:
        flat = pool.view(pool.shape[0], 2, -1, *pool.shape[4:])  # (L, 2, slots, Hkv, D)
        rows = flat[:, :, src].clone()                           # gather first ...
        flat[:, :, dst] = rows                                   # ... then scatter
