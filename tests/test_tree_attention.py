"""Tree attention: Triton kernel vs torch reference vs TorchAttention vs naive math.

The Triton kernels run under TRITON_INTERPRET=1 on machines without a GPU
(tests/conftest.py), so grids are small. Unused cache blocks and cache slots
past each request's seq_len are filled with NaN, and outputs are poisoned with
NaN before every run: reading a wrong slot or skipping a row fails the test.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from kernels.tree_attention import default_num_kv_splits, tree_attention, tree_attention_ref
from specdec.attention import PAD_ID, AttentionMetadata, TorchAttention, pack_tree_mask
from specdec.triton_attention import TritonAttention

TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}
# The kernels run on CUDA where there is one, else under the interpreter on CPU
# (conftest.py sets TRITON_INTERPRET=1 only when CUDA is absent).
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------- batch builders

def tree_parents(shape: str, n: int, gen: torch.Generator) -> list[int]:
    """Parents of an n-node tree (node 0 = root, parents[i] < i)."""
    if shape == "chain":
        return [-1] + list(range(n - 1))
    if shape == "star":
        return [-1] + [0] * (n - 1)
    assert shape == "random"
    return [-1] + [int(torch.randint(0, i, (1,), generator=gen)) for i in range(1, n)]


def ancestor_mask(parents: list[int]) -> torch.Tensor:
    """[n, n] bool: row i sees itself and its ancestors."""
    n = len(parents)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i, p in enumerate(parents):
        if p >= 0:
            mask[i] = mask[p]
        mask[i, i] = True
    return mask


@dataclass
class Req:
    ctx_len: int               # cached prefix length
    q_len: int                 # new tokens
    tree: str | None = None    # None = causal, else "random" | "chain" | "star"


@dataclass
class Batch:
    q: torch.Tensor             # [T, Hq, D]
    k_cache: torch.Tensor       # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor
    block_tables: torch.Tensor  # [B, max_blocks] int32
    cu_seqlens_q: torch.Tensor  # [B+1] int32
    seq_lens: torch.Tensor      # [B] int32
    tree_mask: torch.Tensor | None  # [T, W] int32
    is_tree: torch.Tensor | None    # [B] int32
    max_q_len: int
    reqs: list[Req]

    def args(self):
        return (self.q, self.k_cache, self.v_cache, self.block_tables, self.cu_seqlens_q,
                self.seq_lens, self.tree_mask, self.is_tree)

    def to(self, device: torch.device) -> "Batch":
        moved = [None if t is None else t.to(device) for t in self.args()]
        return Batch(*moved, self.max_q_len, self.reqs)


def make_batch(reqs: list[Req], num_heads: int, num_kv_heads: int, head_dim: int,
               block_size: int, dtype: torch.dtype, seed: int = 0,
               spare_blocks: int = 3, device: torch.device = DEVICE) -> Batch:
    """Random batch on a shuffled paged cache; everything unused in the cache is NaN."""
    gen = torch.Generator().manual_seed(seed)
    seq_lens = [r.ctx_len + r.q_len for r in reqs]
    blocks_per_req = [math.ceil(s / block_size) for s in seq_lens]
    num_blocks = sum(blocks_per_req) + spare_blocks
    k_cache = torch.full((num_blocks, block_size, num_kv_heads, head_dim), float("nan"),
                         dtype=dtype)
    v_cache = torch.full_like(k_cache, float("nan"))
    perm = torch.randperm(num_blocks, generator=gen).to(torch.int32)
    max_blocks = max(blocks_per_req) + 1  # at least one PAD_ID column
    block_tables = torch.full((len(reqs), max_blocks), PAD_ID, dtype=torch.int32)
    used = 0
    for b, (s, nb) in enumerate(zip(seq_lens, blocks_per_req)):
        block_tables[b, :nb] = perm[used:used + nb]
        used += nb
        kv = torch.randn(2, s, num_kv_heads, head_dim, generator=gen).to(dtype)
        slots = (block_tables[b, :nb].long()[:, None] * block_size
                 + torch.arange(block_size)).flatten()[:s]
        k_cache.view(-1, num_kv_heads, head_dim)[slots] = kv[0]
        v_cache.view(-1, num_kv_heads, head_dim)[slots] = kv[1]

    q_lens = [r.q_len for r in reqs]
    num_tokens = sum(q_lens)
    q = torch.randn(num_tokens, num_heads, head_dim, generator=gen).to(dtype)
    cu = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    has_tree = any(r.tree for r in reqs)
    tree_mask = is_tree = None
    if has_tree:
        width = max(r.q_len for r in reqs if r.tree)
        dense = torch.zeros(num_tokens, width, dtype=torch.bool)
        for b, r in enumerate(reqs):
            if r.tree:
                start = int(cu[b])
                dense[start:start + r.q_len, :r.q_len] = ancestor_mask(
                    tree_parents(r.tree, r.q_len, gen))
            else:  # causal rows: garbage bits that the kernel must ignore
                dense[int(cu[b]):int(cu[b + 1])] = torch.rand(r.q_len, width, generator=gen) < 0.5
        tree_mask = pack_tree_mask(dense)
        is_tree = torch.tensor([1 if r.tree else 0 for r in reqs], dtype=torch.int32)
    return Batch(q, k_cache, v_cache, block_tables, cu,
                 torch.tensor(seq_lens, dtype=torch.int32), tree_mask, is_tree,
                 max(q_lens), reqs).to(device)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-6))


def run_both(batch: Batch, num_kv_splits: int | None = None):
    scale = batch.q.shape[-1] ** -0.5
    out = torch.full_like(batch.q, float("nan"))
    tree_attention(*batch.args(), scale, batch.max_q_len, out=out, num_kv_splits=num_kv_splits)
    ref = torch.full_like(batch.q, float("nan"))
    tree_attention_ref(*batch.args(), scale, batch.max_q_len, out=ref)
    assert not ref[:int(batch.cu_seqlens_q[-1])].isnan().any()
    return out, ref


def check(batch: Batch, num_kv_splits: int | None = None) -> None:
    out, ref = run_both(batch, num_kv_splits)
    assert not out.isnan().any(), "kernel left rows unwritten or read a poisoned slot"
    err = rel_err(out, ref)
    assert err <= TOL[batch.q.dtype], f"rel err {err:.2e}"


MIXED = [Req(45, 7, "random"), Req(0, 1), Req(77, 12), Req(20, 64, "random"), Req(9, 1, "chain")]


# --------------------------------------------------------------------------- kernel vs ref

@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes_and_head_dims(dtype, head_dim):
    """Mixed batch (trees, causal chunks, decode), GQA 3, block size 16."""
    check(make_batch(MIXED, 6, 2, head_dim, 16, dtype, seed=1))


def test_head_dim_not_power_of_two():
    """head_dim 96 runs padded to 128 with masked loads / stores."""
    check(make_batch([Req(21, 6, "random"), Req(40, 1)], 4, 2, 96, 16, torch.float32, seed=7))


@pytest.mark.parametrize("num_nodes", [5, 33, 64])
@pytest.mark.parametrize("shape", ["random", "chain", "star"])
def test_tree_shapes(shape, num_nodes):
    """Trees up to 64 nodes (1-2 mask words) on a prefix not a multiple of the block."""
    reqs = [Req(50, num_nodes, shape), Req(3, num_nodes, shape)]
    check(make_batch(reqs, 4, 1, 64, 32, torch.float32, seed=num_nodes))


@pytest.mark.parametrize("block_size", [16, 32])
@pytest.mark.parametrize("group", [1, 3, 4])
def test_gqa_and_block_size(group, block_size):
    """Decode rows and a tree per batch, across GQA ratios and page sizes."""
    reqs = [Req(100, 1), Req(31, 16, "random"), Req(64, 1)]
    check(make_batch(reqs, 2 * group, 2, 64, block_size, torch.float32, seed=group + block_size))


@pytest.mark.parametrize("ctx_len,chunk", [(0, 37), (45, 100), (130, 3)])
def test_prefill_chunk_on_cached_prefix(ctx_len, chunk):
    """Causal prefill chunk of any length (several query tiles) on a cached prefix."""
    reqs = [Req(ctx_len, chunk), Req(17, 5)]
    check(make_batch(reqs, 4, 4, 64, 16, torch.bfloat16, seed=ctx_len))


@pytest.mark.parametrize("num_kv_splits", [2, 5])
def test_kv_splits(num_kv_splits):
    """Flash-decoding: partial outputs + LSE merge, including empty splits."""
    reqs = [Req(300, 1), Req(7, 1), Req(150, 20, "random"), Req(61, 4)]
    batch = make_batch(reqs, 3, 1, 64, 16, torch.float32, seed=num_kv_splits)
    check(batch, num_kv_splits)


def test_padding_rows_and_empty_requests_untouched():
    """Rows past cu_seqlens_q[B] (CUDA-graph padding) stay as they were; q_len 0 is fine."""
    batch = make_batch([Req(40, 3, "star"), Req(25, 0), Req(10, 2)], 2, 1, 64, 16,
                       torch.float32, seed=3)
    pad = 5
    batch.q = torch.cat([batch.q, torch.randn(pad, *batch.q.shape[1:], device=DEVICE)])
    batch.tree_mask = torch.cat([batch.tree_mask,
                                 torch.zeros(pad, 1, dtype=torch.int32, device=DEVICE)])
    for splits in (1, 3):
        out, ref = run_both(batch, splits)
        assert out[-pad:].isnan().all()
        assert rel_err(out[:-pad], ref[:-pad]) <= 1e-4


def test_empty_visibility_row_gives_zeros():
    """A tree row that sees nothing (no prefix, no bits) is 0, not NaN, in both paths."""
    batch = make_batch([Req(0, 3, "chain")], 2, 1, 64, 16, torch.float32)
    batch.tree_mask[1] = 0
    for splits in (1, 2):
        out, ref = run_both(batch, splits)
        assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.equal(ref[1], out[1])
        assert rel_err(out, ref) <= 1e-4


def test_causal_batch_without_tree_mask():
    batch = make_batch([Req(33, 4), Req(0, 9)], 3, 1, 64, 32, torch.float32, seed=5)
    check(batch)


# --------------------------------------------------------------------------- ref vs naive, torch

def test_ref_matches_naive_dense_attention():
    """Tiny hand-built case: 2 requests, explicit loops over keys, no paging tricks."""
    torch.manual_seed(0)
    block_size, num_kv_heads, group, head_dim = 4, 1, 2, 8
    # request 0: 5 cached + tree [root, two children of the root]
    # request 1: 2 cached + 2 causal
    parents = [-1, 0, 0]
    ctx = [5, 2]
    q_lens = [3, 2]
    keys = [torch.randn(c + n, num_kv_heads, head_dim) for c, n in zip(ctx, q_lens)]
    vals = [torch.randn(c + n, num_kv_heads, head_dim) for c, n in zip(ctx, q_lens)]
    q = torch.randn(sum(q_lens), num_kv_heads * group, head_dim)
    # pages: request 0 -> blocks [3, 0], request 1 -> block [2]; block 1 unused
    k_cache = torch.zeros(4, block_size, num_kv_heads, head_dim)
    v_cache = torch.zeros_like(k_cache)
    tables = [[3, 0], [2, PAD_ID]]
    for b in range(2):
        for p in range(len(keys[b])):
            blk = tables[b][p // block_size]
            k_cache[blk, p % block_size] = keys[b][p]
            v_cache[blk, p % block_size] = vals[b][p]
    mask = torch.zeros(5, 3, dtype=torch.bool)
    mask[:3] = ancestor_mask(parents)
    scale = 0.3

    expected = torch.zeros_like(q)
    rows = [(0, t) for t in range(3)] + [(1, t) for t in range(2)]
    for row, (b, t) in enumerate(rows):
        for h in range(q.shape[1]):
            if b == 0:  # tree: prefix + ancestors
                visible = list(range(ctx[0])) + [ctx[0] + j for j in range(3) if mask[row, j]]
            else:       # causal
                visible = list(range(ctx[1] + t + 1))
            s = torch.stack([q[row, h] @ keys[b][p, h // group] * scale for p in visible])
            w = torch.softmax(s, 0)
            expected[row, h] = sum(w[i] * vals[b][p, h // group] for i, p in enumerate(visible))

    out = tree_attention_ref(q, k_cache, v_cache, torch.tensor(tables, dtype=torch.int32),
                             torch.tensor([0, 3, 5], dtype=torch.int32),
                             torch.tensor([8, 4], dtype=torch.int32), pack_tree_mask(mask),
                             torch.tensor([1, 0], dtype=torch.int32), scale, 3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def make_meta(batch: Batch, slot_mapping: torch.Tensor) -> AttentionMetadata:
    return AttentionMetadata(
        cu_seqlens_q=batch.cu_seqlens_q, seq_lens=batch.seq_lens,
        block_tables=batch.block_tables, slot_mapping=slot_mapping,
        tree_mask=batch.tree_mask, is_tree=batch.is_tree,
        q_lens_cpu=[r.q_len for r in batch.reqs],
        seq_lens_cpu=batch.seq_lens.tolist(), block_tables_cpu=batch.block_tables.tolist(),
        is_tree_cpu=[bool(r.tree) for r in batch.reqs])


def new_token_slots(batch: Batch) -> torch.Tensor:
    """[T] int64 cache slots of every request's new tokens."""
    block_size = batch.k_cache.shape[1]
    slots = []
    for b, r in enumerate(batch.reqs):
        for p in range(r.ctx_len, r.ctx_len + r.q_len):
            slots.append(int(batch.block_tables[b, p // block_size]) * block_size + p % block_size)
    return torch.tensor(slots, dtype=torch.int64)


def split_new_kv(batch: Batch):
    """Read back the new tokens' K/V ([T, Hkv, D]) so a backend can store them again."""
    slots = new_token_slots(batch)
    flat_k = batch.k_cache.view(-1, *batch.k_cache.shape[2:])
    flat_v = batch.v_cache.view(-1, *batch.v_cache.shape[2:])
    return flat_k[slots].clone(), flat_v[slots].clone(), slots


@pytest.mark.parametrize("reqs", [MIXED, [Req(70, 1), Req(5, 1)],
                                  [Req(0, 20), Req(33, 40, "star")]],
                         ids=["mixed", "decode", "prefill+tree"])
def test_torch_attention_matches_ref(reqs):
    """specdec.attention.TorchAttention (the CPU backend) agrees with tree_attention_ref."""
    batch = make_batch(reqs, 6, 2, 64, 16, torch.float32, seed=11, device=torch.device("cpu"))
    k, v, slots = split_new_kv(batch)
    scale = 0.125
    out = TorchAttention().forward(batch.q, k, v, batch.k_cache, batch.v_cache,
                                   make_meta(batch, slots), scale)
    ref = tree_attention_ref(*batch.args(), scale, batch.max_q_len)
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("num_kv_splits", [None, 2])
def test_triton_backend_matches_torch_backend(num_kv_splits):
    """TritonAttention.forward (store + attend) == TorchAttention.forward on the same metadata."""
    cpu = torch.device("cpu")
    batch = make_batch(MIXED, 6, 2, 64, 16, torch.float32, seed=2, device=cpu)
    k, v, slots = split_new_kv(batch)
    # Wipe the new tokens' slots so each backend's own store_kv has to fill them.
    for cache in (batch.k_cache, batch.v_cache):
        cache.view(-1, *cache.shape[2:])[slots] = float("nan")
    on_dev = batch.to(DEVICE)  # TorchAttention stays on CPU (its block gather is host-side)
    out = TritonAttention(num_kv_splits).forward(
        on_dev.q, k.to(DEVICE), v.to(DEVICE), on_dev.k_cache, on_dev.v_cache,
        make_meta(on_dev, slots.to(DEVICE)), 0.125)
    ref = TorchAttention().forward(batch.q, k, v, batch.k_cache, batch.v_cache,
                                   make_meta(batch, slots), 0.125)
    assert torch.equal(on_dev.k_cache.cpu().nan_to_num(7.0), batch.k_cache.nan_to_num(7.0))
    assert torch.equal(on_dev.v_cache.cpu().nan_to_num(7.0), batch.v_cache.nan_to_num(7.0))
    assert rel_err(out.cpu(), ref) <= 1e-4


# --------------------------------------------------------------------------- launcher

def test_launcher_rejects_bad_inputs():
    batch = make_batch([Req(10, 2)], 4, 2, 64, 16, torch.float32)
    scale = 0.125
    with pytest.raises(AssertionError, match="GQA"):
        tree_attention(batch.q[:, :3], *batch.args()[1:], scale, 2)
    with pytest.raises(AssertionError, match="int32"):
        tree_attention(batch.q, batch.k_cache, batch.v_cache, batch.block_tables.long(),
                       *batch.args()[4:], scale, 2)
    with pytest.raises(AssertionError, match="contiguous"):
        q_strided = batch.q.transpose(1, 2).contiguous().transpose(1, 2)
        tree_attention(q_strided, *batch.args()[1:], scale, 2)
    with pytest.raises(AssertionError, match="dtype"):
        tree_attention(batch.q.bfloat16(), *batch.args()[1:], scale, 2)


def test_default_splits_is_one_off_cuda():
    assert default_num_kv_splits(1, 9, 3, 1, 1 << 20, torch.device("cpu")) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_capture():
    """The launcher does no host sync or data-dependent allocation: it captures and replays."""
    batch = make_batch(MIXED, 6, 2, 64, 16, torch.bfloat16, seed=4, device=torch.device("cuda"))
    args = batch.args()
    out = torch.full_like(args[0], float("nan"))
    for splits in (1, 4):
        tree_attention(*args, 0.125, batch.max_q_len, out=out, num_kv_splits=splits)  # compile
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            tree_attention(*args, 0.125, batch.max_q_len, out=out, num_kv_splits=splits)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        ref = tree_attention_ref(*args, 0.125, batch.max_q_len)
        assert rel_err(out, ref) <= TOL[torch.bfloat16]


# --------------------------------------------------------------------------- GPU compile, no GPU

_COMPILE_SCRIPT = r'''
import sys
import torch, triton
try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import triton.backends.nvidia  # noqa: F401
except ImportError:
    sys.exit(77)
from kernels.kv_store import _commit_kv_kernel, _store_kv_kernel
from kernels.tree_attention import (_launch_config, _merge_splits_kernel, _tile_shape,
                                    _tree_attention_kernel)

def compile_(fn, types, consts, num_warps):
    sig = {n: "constexpr" if n in consts else types.get(n, "i32") for n in fn.arg_names}
    src = ASTSource(fn, sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})

group_pad, block_q = _tile_shape(3, 16)
block_n, num_warps = _launch_config(torch.bfloat16, 64, block_q * group_pad)
types = {n: "*i32" for n in ("block_tables_ptr", "cu_seqlens_q_ptr", "seq_lens_ptr",
                             "tree_mask_ptr", "is_tree_ptr")}
types.update(q_ptr="*bf16", k_cache_ptr="*bf16", v_cache_ptr="*bf16", out_ptr="*bf16",
             part_out_ptr="*fp32", part_lse_ptr="*fp32", sm_scale_log2="fp32")
compile_(_tree_attention_kernel, types, dict(
    BLOCK_SIZE=16, GROUP=3, GROUP_PAD=group_pad, BLOCK_Q=block_q, BLOCK_N=block_n, HEAD_DIM=64,
    BLOCK_D=64, HAS_TREE=True, IS_SPLIT=True, DOT_PRECISION=None, UPCAST_DOT=False), num_warps)
compile_(_merge_splits_kernel, dict(part_out_ptr="*fp32", part_lse_ptr="*fp32", out_ptr="*bf16",
                                    cu_seqlens_q_ptr="*i32"),
         dict(BLOCK_S=4, HEADS=8, HEAD_DIM=64, BLOCK_D=64), 4)
compile_(_store_kv_kernel, dict(k_ptr="*bf16", v_ptr="*bf16", k_cache_ptr="*bf16",
                                v_cache_ptr="*bf16", slot_mapping_ptr="*i64"),
         dict(HEAD_DIM=64, BLOCK_H=4, BLOCK_D=64), 4)
compile_(_commit_kv_kernel, dict(pool_ptr="*bf16", src_slots_ptr="*i64", dst_slots_ptr="*i64",
                                 stride_plane="i64"), dict(BLOCK_P=64, BLOCK_C=128), 4)
'''


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_a_gpu():
    """The interpreter skips Triton's type checks and codegen: compile to sm_90 cubin offline.

    Runs in a subprocess because TRITON_INTERPRET=1 (set for this process) swaps
    @triton.jit for the interpreter. Skips where the NVIDIA backend is absent.
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode == 77:
        pytest.skip("Triton's NVIDIA backend is not installed")
    assert proc.returncode == 0, proc.stderr[-4000:]
