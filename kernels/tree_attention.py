"""Tree-verification attention over the paged KV pool (Triton) and its torch reference.

One launch attends every new token of a flattened ragged batch (prefill-chunk
tokens and draft-tree nodes alike) to its request's cached prefix, read through
the block table, plus the request's own new tokens, whose K/V `store_kv` has
already written to the cache. Among the new tokens visibility is causal, or,
where `is_tree[b]`, given by the packed ancestor mask: bit j of `tree_mask[t]`
(word j // 32, bit j % 32) set means new token j of the same request is visible
to flat query row t. This is the contract of `specdec/attention.py`.

Kernel layout
-------------
* One program = (query tile of one request, one KV head, one KV split). The
  query tile packs BLOCK_Q new tokens x all GROUP query heads that share the KV
  head into the M dimension of the matmuls, so each K/V tile is read once per
  KV head (GQA-aware) and decode (q_len = 1) still feeds tl.dot >= 16 rows.
* K/V are gathered per token (slot = block_table[p // block_size] * block_size
  + p % block_size), so BLOCK_N is independent of the page size and any
  shuffled block table works.
* The key range of a tile is walked in two phases: the cached prefix, where
  every key is visible (bounds mask only), then the new tokens, where the
  causal / tree mask is applied. Only the last one or two tiles pay for the
  mask.
* Flash-decoding: with num_kv_splits > 1 the key range is cut into that many
  partitions; each writes a normalised partial output + log-sum-exp (fp32
  scratch) and a merge kernel combines them. Scratch is sized from shapes only.

CUDA-graph capture: the launcher never reads device tensors on the host
(no .item() / .tolist()); the caller passes `max_q_len` as a host int and the
grid and scratch depend only on it and on tensor shapes.
"""
from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
_INDEX_DTYPE = torch.int32


# --------------------------------------------------------------------------- kernels

@triton.jit
def _attend_range(acc, l_i, m_i, q, lo, hi,
                  k_cache_ptr, v_cache_ptr, bt_row_ptr, kv_head,
                  stride_kb, stride_ko, stride_kh, stride_vb, stride_vo, stride_vh,
                  ctx_len, tok, row_valid, mask_row_ptrs, is_tree, sm_scale_log2,
                  BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                  BLOCK_D: tl.constexpr, IS_NEW: tl.constexpr, HAS_TREE: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """Online-softmax accumulation over keys [lo, hi) of one request.

    acc [BLOCK_M, BLOCK_D] fp32, l_i / m_i [BLOCK_M] fp32 (log2 domain).
    IS_NEW: keys are new tokens (apply causal / tree visibility), else the
    cached prefix (every key visible).
    """
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)                       # [BLOCK_N] KV positions
        n_mask = offs_n < hi
        # Per-token paged gather; masked positions never touch the (PAD_ID) table tail.
        block_ids = tl.load(bt_row_ptr + offs_n // BLOCK_SIZE, mask=n_mask, other=0)
        block_ids = tl.maximum(block_ids, 0).to(tl.int64)
        page_off = (offs_n % BLOCK_SIZE).to(tl.int64)
        kv_mask = n_mask[:, None] & d_mask[None, :]
        # K/V rows are contiguous along D: load [BLOCK_N, BLOCK_D] (coalesced), transpose
        # in registers for the dot.
        k_ptrs = (k_cache_ptr + block_ids[:, None] * stride_kb + page_off[:, None] * stride_ko
                  + kv_head * stride_kh + offs_d[None, :])
        k = tl.load(k_ptrs, mask=kv_mask, other=0.0)                 # [BLOCK_N, BLOCK_D]
        if UPCAST_DOT:
            k = k.to(tl.float32)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)  # [BLOCK_M, BLOCK_N]
        qk = qk * sm_scale_log2

        visible = n_mask[None, :]
        if IS_NEW:
            j = offs_n - ctx_len                                     # new-token index of each key
            causal = j[None, :] <= tok[:, None]
            if HAS_TREE:
                # (tl.where, not `& is_tree`: the interpreter mistypes bool-tensor & bool-scalar)
                word_mask = tl.where(is_tree, row_valid[:, None] & n_mask[None, :], False)
                words = tl.load(mask_row_ptrs[:, None] + (j // 32)[None, :], mask=word_mask,
                                other=0)
                # Arithmetic shift is fine: only bit 0 is kept after the shift.
                bit = (words >> (j % 32)[None, :]) & 1
                visible = visible & tl.where(is_tree, bit != 0, causal)
            else:
                visible = visible & causal
        qk = tl.where(visible, qk, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(qk, 1))
        # A row with no visible key yet keeps m = -inf; subtract 0 instead so that
        # exp2(-inf - -inf) never produces NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)

        v_ptrs = (v_cache_ptr + block_ids[:, None] * stride_vb + page_off[:, None] * stride_vo
                  + kv_head * stride_vh + offs_d[None, :])
        v = tl.load(v_ptrs, mask=kv_mask, other=0.0)                 # [BLOCK_N, BLOCK_D]
        # P is rounded to the cache dtype before P @ V (FlashAttention's choice).
        p = p.to(v.dtype)
        if UPCAST_DOT:
            p = p.to(tl.float32)
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _tree_attention_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, cu_seqlens_q_ptr, seq_lens_ptr,
    tree_mask_ptr, is_tree_ptr, out_ptr, part_out_ptr, part_lse_ptr,
    sm_scale_log2, num_kv_heads, num_kv_splits,
    stride_qt, stride_qh,
    stride_kb, stride_ko, stride_kh,
    stride_vb, stride_vo, stride_vh,
    stride_bt, stride_tm,
    stride_ot, stride_oh,
    stride_ps, stride_pt, stride_ph,
    stride_ls, stride_lt,
    BLOCK_SIZE: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_TREE: tl.constexpr, IS_SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):
    BLOCK_M: tl.constexpr = BLOCK_Q * GROUP_PAD
    pid_q = tl.program_id(0)
    pid_bh = tl.program_id(1)
    split = tl.program_id(2)
    b = pid_bh // num_kv_heads
    kv_head = pid_bh % num_kv_heads

    q_start = tl.load(cu_seqlens_q_ptr + b)
    q_len = tl.load(cu_seqlens_q_ptr + b + 1) - q_start
    tile_q0 = pid_q * BLOCK_Q
    if tile_q0 >= q_len:  # the grid is sized for the longest request
        return
    seq_len = tl.load(seq_lens_ptr + b)
    ctx_len = seq_len - q_len

    # Row m of the tile = (new token tok, query head kv_head * GROUP + g).
    offs_m = tl.arange(0, BLOCK_M)
    tok = tile_q0 + offs_m // GROUP_PAD                             # [BLOCK_M] new-token index
    g = offs_m % GROUP_PAD
    row_valid = (tok < q_len) & (g < GROUP)
    q_head = kv_head * GROUP + g
    q_row = (q_start + tok).to(tl.int64)                            # [BLOCK_M] flat token row
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < HEAD_DIM
    q = tl.load(q_ptr + q_row[:, None] * stride_qt + q_head[:, None] * stride_qh + offs_d[None, :],
                mask=row_valid[:, None] & d_mask[None, :], other=0.0)  # [BLOCK_M, BLOCK_D]
    if UPCAST_DOT:
        q = q.to(tl.float32)

    if HAS_TREE:
        is_tree = tl.load(is_tree_ptr + b) != 0
    else:
        is_tree = False
    mask_row_ptrs = tree_mask_ptr + q_row * stride_tm              # [BLOCK_M]

    # Causal rows never see past the tile's last token; tree rows may see any new
    # token their mask names, so they scan the whole request.
    kv_end = ctx_len + tl.minimum(q_len, tile_q0 + BLOCK_Q)
    if is_tree:
        kv_end = seq_len
    # Flash-decoding partition of [0, kv_end), BLOCK_N-aligned.
    # (integer arithmetic inline rather than tl.cdiv: jit calls are slow in the interpreter)
    per_split = (kv_end + num_kv_splits - 1) // num_kv_splits
    chunk = (per_split + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    lo = split * chunk
    hi = tl.minimum(lo + chunk, kv_end)
    mid = tl.minimum(tl.maximum(ctx_len, lo), hi)                   # prefix | new tokens

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    bt_row_ptr = block_tables_ptr + b * stride_bt
    acc, l_i, m_i = _attend_range(
        acc, l_i, m_i, q, lo, mid, k_cache_ptr, v_cache_ptr, bt_row_ptr, kv_head,
        stride_kb, stride_ko, stride_kh, stride_vb, stride_vo, stride_vh,
        ctx_len, tok, row_valid, mask_row_ptrs, is_tree, sm_scale_log2,
        BLOCK_SIZE, BLOCK_N, HEAD_DIM, BLOCK_D, False, HAS_TREE, DOT_PRECISION, UPCAST_DOT)
    acc, l_i, m_i = _attend_range(
        acc, l_i, m_i, q, mid, hi, k_cache_ptr, v_cache_ptr, bt_row_ptr, kv_head,
        stride_kb, stride_ko, stride_kh, stride_vb, stride_vo, stride_vh,
        ctx_len, tok, row_valid, mask_row_ptrs, is_tree, sm_scale_log2,
        BLOCK_SIZE, BLOCK_N, HEAD_DIM, BLOCK_D, True, HAS_TREE, DOT_PRECISION, UPCAST_DOT)

    # A row that saw no key (empty split, or an empty tree-mask row) yields 0.
    has_keys = l_i > 0.0
    o = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    io_mask = row_valid[:, None] & d_mask[None, :]
    if IS_SPLIT:
        lse = tl.where(has_keys, m_i + tl.math.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))
        split64 = split.to(tl.int64)  # split * stride_ps can pass 2^31 on long batches
        tl.store(part_out_ptr + split64 * stride_ps + q_row[:, None] * stride_pt
                 + q_head[:, None] * stride_ph + offs_d[None, :], o, mask=io_mask)
        tl.store(part_lse_ptr + split64 * stride_ls + q_row * stride_lt + q_head, lse,
                 mask=row_valid)
    else:
        tl.store(out_ptr + q_row[:, None] * stride_ot + q_head[:, None] * stride_oh
                 + offs_d[None, :], o.to(out_ptr.dtype.element_ty), mask=io_mask)


@triton.jit
def _merge_splits_kernel(
    part_out_ptr, part_lse_ptr, out_ptr, cu_seqlens_q_ptr, num_seqs, num_kv_splits, num_heads,
    stride_ps, stride_pt, stride_ph, stride_ls, stride_lt, stride_ot, stride_oh,
    BLOCK_S: tl.constexpr, HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out[t, h] = sum_s 2^(lse[s, t, h] - lse[t, h]) * part_out[s, t, h].

    One program per (token, HEADS query heads); column c of the [BLOCK_S, HEADS *
    BLOCK_D] tile is (head c // BLOCK_D, dim c % BLOCK_D), so every reduction is
    over the split axis only.
    """
    t = tl.program_id(0)
    # Rows past the last request (CUDA-graph padding) were never attended: leave them.
    if t >= tl.load(cu_seqlens_q_ptr + num_seqs):
        return
    offs_s = tl.arange(0, BLOCK_S).to(tl.int64)
    offs_c = tl.arange(0, HEADS * BLOCK_D)
    head = tl.program_id(1) * HEADS + offs_c // BLOCK_D
    d = offs_c % BLOCK_D
    c_mask = (head < num_heads) & (d < HEAD_DIM)
    tile_mask = (offs_s < num_kv_splits)[:, None] & c_mask[None, :]
    lse = tl.load(part_lse_ptr + offs_s[:, None] * stride_ls + t * stride_lt + head[None, :],
                  mask=tile_mask, other=float("-inf"))               # [BLOCK_S, HEADS*BLOCK_D]
    m = tl.max(lse, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    w = tl.math.exp2(lse - m_safe[None, :])                         # 0 for empty splits
    parts = tl.load(part_out_ptr + offs_s[:, None] * stride_ps + t * stride_pt
                    + head[None, :] * stride_ph + d[None, :], mask=tile_mask, other=0.0)
    denom = tl.sum(w, 0)
    o = tl.sum(parts * w, 0) / tl.where(denom > 0.0, denom, 1.0)    # [HEADS*BLOCK_D]
    tl.store(out_ptr + t * stride_ot + head * stride_oh + d, o.to(out_ptr.dtype.element_ty),
             mask=c_mask)


# --------------------------------------------------------------------------- launcher

def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def default_num_kv_splits(num_seqs: int, num_heads: int, num_kv_heads: int, max_q_len: int,
                          max_kv_len: int, device: torch.device) -> int:
    """Flash-decoding split count the launcher uses, from shapes only (CUDA-graph safe).

    Split until the grid (query tiles x requests x KV heads x splits) fills
    about two waves of SMs, but keep every split at least 512 keys long
    (shorter splits cost more in merge than they save). `max_kv_len` is the
    block-table capacity, an upper bound on any seq_len. 1 off CUDA.
    """
    if device.type != "cuda":
        return 1
    _, block_q = _tile_shape(num_heads // num_kv_heads, max_q_len)
    num_programs = triton.cdiv(max(max_q_len, 1), block_q) * num_seqs * num_kv_heads
    target = 2 * _num_sms(device.index if device.index is not None else torch.cuda.current_device())
    splits = triton.cdiv(target, max(num_programs, 1))
    return max(1, min(splits, max_kv_len // 512, 32))


def _tile_shape(group: int, max_q_len: int) -> tuple[int, int]:
    """(GROUP_PAD, BLOCK_Q): pack BLOCK_Q tokens x GROUP_PAD heads into ~64 rows, >= 16."""
    group_pad = triton.next_power_of_2(group)
    block_q = min(triton.next_power_of_2(max(max_q_len, 1)), max(1, 64 // group_pad))
    block_q = max(block_q, 16 // group_pad, 1)  # tl.dot needs M >= 16
    return group_pad, block_q


def _launch_config(dtype: torch.dtype, block_d: int, block_m: int) -> tuple[int, int]:
    """(BLOCK_N, num_warps) that compile without register spills on sm_80 / sm_90.

    Chosen from ptxas resource usage (compiled offline for both targets), not
    yet from timings. fp32 runs `ieee` dots on CUDA cores, which need far more
    registers per tile than 16-bit tensor-core dots.
    """
    if dtype == torch.float32:
        return 16, 8
    block_n = 64 if block_d <= 64 else 32
    return block_n, 8 if block_m * block_d >= 4096 else 4


def _check_inputs(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, tree_mask,
                  is_tree, out) -> None:
    assert q.dim() == 3, f"q must be [T, Hq, D], got {tuple(q.shape)}"
    assert k_cache.dim() == 4 and k_cache.shape == v_cache.shape, \
        "k_cache / v_cache must both be [num_blocks, block_size, Hkv, D]"
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[2]
    assert k_cache.shape[3] == head_dim, "q and cache head_dim differ"
    assert num_heads % num_kv_heads == 0, f"GQA needs Hq % Hkv == 0 ({num_heads}, {num_kv_heads})"
    assert q.dtype in (torch.float32, torch.float16, torch.bfloat16), f"unsupported {q.dtype}"
    assert k_cache.dtype == q.dtype and v_cache.dtype == q.dtype, "cache dtype must match q"
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("out", out)):
        assert t.stride(-1) == 1, f"{name} must have a contiguous last dim"
        assert t.device == q.device, f"{name} is on {t.device}, q on {q.device}"
    assert out.shape == q.shape and out.dtype == q.dtype, "out must be like q"
    num_seqs = seq_lens.shape[0]
    assert cu_seqlens_q.shape == (num_seqs + 1,), "cu_seqlens_q must be [B+1]"
    assert block_tables.dim() == 2 and block_tables.shape[0] == num_seqs, \
        "block_tables must be [B, max_blocks]"
    assert block_tables.stride(1) == 1, "block_tables must have a contiguous last dim"
    for name, t in (("cu_seqlens_q", cu_seqlens_q), ("seq_lens", seq_lens),
                    ("block_tables", block_tables)):
        assert t.dtype == _INDEX_DTYPE, f"{name} must be int32, got {t.dtype}"
        assert t.device == q.device, f"{name} is on {t.device}, q on {q.device}"
    assert cu_seqlens_q.is_contiguous() and seq_lens.is_contiguous()
    if tree_mask is not None:
        assert tree_mask.dim() == 2 and tree_mask.shape[0] == num_tokens, \
            "tree_mask must be [T, W]"
        assert tree_mask.dtype == _INDEX_DTYPE and tree_mask.stride(1) == 1
        assert is_tree is not None and is_tree.shape == (num_seqs,), "is_tree must be [B]"
        assert is_tree.dtype == _INDEX_DTYPE and is_tree.is_contiguous()
        assert tree_mask.device == q.device and is_tree.device == q.device


def tree_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   block_tables: torch.Tensor, cu_seqlens_q: torch.Tensor,
                   seq_lens: torch.Tensor, tree_mask: torch.Tensor | None,
                   is_tree: torch.Tensor | None, scale: float, max_q_len: int,
                   out: torch.Tensor | None = None,
                   num_kv_splits: int | None = None) -> torch.Tensor:
    """Paged attention of a flattened ragged batch of new tokens (tree or causal).

    Parameters
    ----------
    q : [T, Hq, D] fp32 / fp16 / bf16
        Queries of the new tokens of all requests, request b at rows
        cu_seqlens_q[b] : cu_seqlens_q[b+1]. Last dim contiguous.
    k_cache, v_cache : [num_blocks, block_size, Hkv, D], same dtype as q
        Paged caches (e.g. `KVPool.layer_cache`). The new tokens' K/V must
        already be stored at KV positions seq_lens[b]-q_len_b .. seq_lens[b]-1.
        Read only.
    block_tables : [B, max_blocks] int32
        Block ids per request; PAD_ID (-1) past the end is never read.
    cu_seqlens_q : [B+1] int32
        Prefix sums of new tokens per request (q_len_b may be 0).
    seq_lens : [B] int32
        KV length of each request including its new tokens.
    tree_mask : [T, W] int32 or None
        Packed visibility among new tokens: bit j % 32 of word j // 32 of row t
        set = new token j of the same request is visible to row t. Rows of
        requests with is_tree[b] = 0 are ignored. W * 32 must cover the longest
        tree. None = every request is causal.
    is_tree : [B] int32 or None
        1 = use tree_mask rows, 0 = causal among the new tokens. Required with
        tree_mask.
    scale : float
        Softmax scale (usually D ** -0.5).
    max_q_len : int
        Host-side upper bound of max_b q_len_b; sizes the grid (no device read).
    out : [T, Hq, D], same dtype as q, optional
        Written in place for rows < cu_seqlens_q[B]; rows past it (padding)
        are left untouched.
    num_kv_splits : int, optional
        Flash-decoding partitions of each request's key range; default from
        shapes and the SM count (1 off CUDA).

    Returns
    -------
    out : [T, Hq, D]
        Attention output; accumulation in fp32. A query that sees no key at
        all (an empty tree-mask row on an empty prefix) gets zeros.
    """
    if out is None:
        out = torch.empty_like(q)
    _check_inputs(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, tree_mask,
                  is_tree, out)
    num_tokens, num_heads, head_dim = q.shape
    num_seqs = seq_lens.shape[0]
    _, block_size, num_kv_heads, _ = k_cache.shape
    if num_tokens == 0 or num_seqs == 0 or max_q_len <= 0:
        return out

    group = num_heads // num_kv_heads
    group_pad, block_q = _tile_shape(group, max_q_len)
    num_q_tiles = triton.cdiv(max_q_len, block_q)
    if num_kv_splits is None:
        num_kv_splits = default_num_kv_splits(num_seqs, num_heads, num_kv_heads, max_q_len,
                                              block_tables.shape[1] * block_size, q.device)
    assert num_kv_splits >= 1
    block_d = max(triton.next_power_of_2(head_dim), 16)
    block_n, num_warps = _launch_config(q.dtype, block_d, block_q * group_pad)
    is_split = num_kv_splits > 1

    if is_split:
        # fp32 scratch, sized from shapes only (CUDA-graph safe).
        part_out = torch.empty(num_kv_splits, num_tokens, num_heads, head_dim,
                               dtype=torch.float32, device=q.device)
        part_lse = torch.empty(num_kv_splits, num_tokens, num_heads,
                               dtype=torch.float32, device=q.device)
    else:
        part_out = part_lse = out  # unused; any tensor of the right device
    has_tree = tree_mask is not None
    tm = tree_mask if has_tree else cu_seqlens_q     # dummy pointers when no tree
    it = is_tree if has_tree else cu_seqlens_q

    grid = (num_q_tiles, num_seqs * num_kv_heads, num_kv_splits)
    _tree_attention_kernel[grid](
        q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, tm, it, out,
        part_out, part_lse,
        scale * LOG2E, num_kv_heads, num_kv_splits,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_tables.stride(0), tm.stride(0) if has_tree else 0,
        out.stride(0), out.stride(1),
        part_out.stride(0) if is_split else 0, part_out.stride(1) if is_split else 0,
        part_out.stride(2) if is_split else 0,
        part_lse.stride(0) if is_split else 0, part_lse.stride(1) if is_split else 0,
        BLOCK_SIZE=block_size, GROUP=group, GROUP_PAD=group_pad, BLOCK_Q=block_q,
        BLOCK_N=block_n, HEAD_DIM=head_dim, BLOCK_D=block_d, HAS_TREE=has_tree,
        IS_SPLIT=is_split,
        # fp32 inputs must not silently drop to tf32 on tensor cores.
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else None,
        # Triton's interpreter multiplies bf16 tensors as raw uint16 bits (numpy has
        # no bf16): feed its tl.dot exact fp32 copies instead. Never on a GPU.
        UPCAST_DOT=q.dtype == torch.bfloat16 and _interpreting(),
        num_warps=num_warps, num_stages=2,
    )
    if is_split:
        block_s = triton.next_power_of_2(num_kv_splits)
        # Enough heads per program to amortise the lse loads, tile <= 4096 elements.
        heads = max(1, min(triton.next_power_of_2(num_heads), 4096 // (block_s * block_d)))
        _merge_splits_kernel[(num_tokens, triton.cdiv(num_heads, heads))](
            part_out, part_lse, out, cu_seqlens_q, num_seqs, num_kv_splits, num_heads,
            part_out.stride(0), part_out.stride(1), part_out.stride(2),
            part_lse.stride(0), part_lse.stride(1), out.stride(0), out.stride(1),
            BLOCK_S=block_s, HEADS=heads, HEAD_DIM=head_dim, BLOCK_D=block_d, num_warps=4,
        )
    return out


# --------------------------------------------------------------------------- reference

def tree_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       block_tables: torch.Tensor, cu_seqlens_q: torch.Tensor,
                       seq_lens: torch.Tensor, tree_mask: torch.Tensor | None,
                       is_tree: torch.Tensor | None, scale: float, max_q_len: int,
                       out: torch.Tensor | None = None,
                       num_kv_splits: int | None = None) -> torch.Tensor:
    """Pure-torch `tree_attention` (same arguments, shapes and result; fp32 math).

    Syncs with the device (reads the index tensors on the host); for tests and
    CPU only. `max_q_len` and `num_kv_splits` are accepted and ignored: the
    math does not depend on them.
    """
    if out is None:
        out = torch.empty_like(q)
    num_heads, head_dim = q.shape[1], q.shape[2]
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    cu = cu_seqlens_q.tolist()
    lens = seq_lens.tolist()
    trees = is_tree.tolist() if (tree_mask is not None and is_tree is not None) else None
    for b, seq_len in enumerate(lens):
        start, end = cu[b], cu[b + 1]
        q_len = end - start
        if q_len == 0:
            continue
        ctx_len = seq_len - q_len
        num_blocks = math.ceil(seq_len / block_size)
        blocks = block_tables[b, :num_blocks].long()
        k = k_cache[blocks].flatten(0, 1)[:seq_len].float()             # (S, Hkv, D)
        v = v_cache[blocks].flatten(0, 1)[:seq_len].float()
        k = k.repeat_interleave(group, dim=1)                           # (S, Hq, D)
        v = v.repeat_interleave(group, dim=1)
        if trees is not None and trees[b]:
            j = torch.arange(q_len, device=q.device)
            words = tree_mask[start:end][:, j // 32].long() & 0xFFFFFFFF
            new = ((words >> (j % 32)) & 1).bool()                      # (Q, Q)
        else:
            new = torch.ones(q_len, q_len, dtype=torch.bool, device=q.device).tril()
        visible = torch.cat([torch.ones(q_len, ctx_len, dtype=torch.bool, device=q.device),
                             new], dim=1)                               # (Q, S)
        scores = torch.einsum("qhd,shd->hqs", q[start:end].float(), k) * scale
        scores = scores.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)           # empty rows -> 0
        out[start:end] = torch.einsum("hqs,shd->qhd", probs, v).to(out.dtype)
    return out
