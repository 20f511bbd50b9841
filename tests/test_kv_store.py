"""store_kv / commit_kv: Triton kernels (interpreter on CPU) vs their torch references."""
from __future__ import annotations

import pytest
import torch

from kernels.kv_store import PAD_ID, commit_kv, commit_kv_ref, store_kv, store_kv_ref

# Kernels run on CUDA where there is one, else in the interpreter (tests/conftest.py).
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def nan_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise-equal values, NaN == NaN (caches start NaN-poisoned)."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


@pytest.mark.parametrize("src_dtype,cache_dtype", [
    (torch.float32, torch.float32), (torch.float32, torch.bfloat16), (torch.float16, torch.float16),
])
@pytest.mark.parametrize("num_kv_heads,head_dim,block_size", [(3, 64, 16), (2, 128, 32)])
def test_store_kv_matches_ref(src_dtype, cache_dtype, num_kv_heads, head_dim, block_size):
    gen = torch.Generator().manual_seed(num_kv_heads)
    num_blocks, num_tokens = 5, 9
    k_cache = torch.full((num_blocks, block_size, num_kv_heads, head_dim), float("nan"),
                         dtype=cache_dtype)
    v_cache = torch.full_like(k_cache, float("nan"))
    k = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen).to(src_dtype)
    v = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen).to(src_dtype)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    slots[[2, 7]] = PAD_ID  # padding tokens are skipped
    caches_ref = (k_cache.clone(), v_cache.clone())
    k_dev, v_dev = k_cache.to(DEVICE), v_cache.to(DEVICE)
    store_kv(k.to(DEVICE), v.to(DEVICE), k_dev, v_dev, slots.to(DEVICE))
    k_cache, v_cache = k_dev.cpu(), v_dev.cpu()
    store_kv_ref(k, v, *caches_ref, slots)
    if src_dtype == cache_dtype or DEVICE.type == "cuda":
        assert nan_equal(k_cache, caches_ref[0]) and nan_equal(v_cache, caches_ref[1])
    else:
        # Triton's interpreter truncates on fp32 -> bf16 where GPUs and torch round to
        # nearest even: allow one bf16 ulp (2^-7 relative) for the downcast.
        for got, want in zip((k_cache, v_cache), caches_ref):
            torch.testing.assert_close(got, want, rtol=2**-7, atol=0, equal_nan=True)
    # exactly the non-padding slots were written
    written = ~k_cache.view(-1, num_kv_heads, head_dim).isnan().all(-1).all(-1)
    assert written.sum() == num_tokens - 2


def test_store_kv_into_pool_layer_view_int32_slots():
    """Writes through kv[layer, 0/1] views of a pool land in that layer only."""
    pool = torch.zeros(3, 2, 4, 16, 2, 64, device=DEVICE)
    k, v = torch.randn(2, 5, 2, 64, device=DEVICE)
    slots = torch.tensor([0, 17, 33, PAD_ID, 63], dtype=torch.int32, device=DEVICE)
    expected = pool.clone()
    store_kv(k, v, pool[1, 0], pool[1, 1], slots)
    store_kv_ref(k, v, expected[1, 0], expected[1, 1], slots)
    assert torch.equal(pool, expected)
    assert pool[0].abs().sum() == 0 and pool[2].abs().sum() == 0


def make_pools(num_blocks: int, block_size: int, seed: int = 0,
               device: torch.device = DEVICE) -> list[torch.Tensor]:
    """Target and draft pools over the same slots, with different shapes and dtypes."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(3, 2, num_blocks, block_size, 3, 64, generator=gen)
    draft = torch.randn(1, 2, num_blocks, block_size, 1, 32, generator=gen).to(torch.bfloat16)
    return [target.to(device), draft.to(device)]


def check_commit(src: list[int], dst: list[int], num_blocks: int = 4, block_size: int = 16,
                 dtype: torch.dtype = torch.int64) -> None:
    pools = make_pools(num_blocks, block_size)
    expected = [p.clone() for p in pools]
    src_t, dst_t = (torch.tensor(x, dtype=dtype, device=DEVICE) for x in (src, dst))
    commit_kv(pools, src_t, dst_t)
    commit_kv_ref(expected, src_t, dst_t)
    for got, want in zip(pools, expected):
        assert torch.equal(got, want)


def test_commit_ref_semantics_by_hand():
    """The reference moves rows gather-then-scatter: a chain of overlapping moves."""
    pool = torch.arange(2 * 2 * 1 * 8 * 1 * 1, dtype=torch.float32).view(2, 2, 1, 8, 1, 1)
    before = pool.clone()
    # compaction: accepted nodes at slots 4, 5, 7 move to 3, 4, 5 (dst 4 is another src)
    commit_kv_ref([pool], torch.tensor([4, 5, 7]), torch.tensor([3, 4, 5]))
    flat, old = pool.view(2, 2, 8), before.view(2, 2, 8)
    assert torch.equal(flat[..., [3, 4, 5]], old[..., [4, 5, 7]])
    untouched = [0, 1, 2, 6, 7]
    assert torch.equal(flat[..., untouched], old[..., untouched])


@pytest.mark.parametrize("src,dst", [
    ([20, 23, 26], [18, 19, 20]),               # compaction towards the prefix, dst <= src
    ([10, 11, 12, 13], [9, 10, 11, 12]),         # every dst but the first is another src
    ([5, 6, 7], [6, 7, 5]),                      # a cycle: only gather-then-scatter gets it right
    ([30, PAD_ID, 40, 41], [29, 3, PAD_ID, 33]),  # PAD_ID on either side = skip
    ([8], [8]),                                  # src == dst
])
def test_commit_kv_matches_ref(src, dst):
    check_commit(src, dst)


def test_commit_kv_many_pairs_int32():
    """More pairs than one column tile holds comfortably; shuffled, overlapping, int32."""
    gen = torch.Generator().manual_seed(1)
    slots = torch.randperm(64, generator=gen)
    src = slots[:40].tolist()
    dst = torch.cat([slots[20:40], slots[40:60]])[torch.randperm(40, generator=gen)].tolist()
    check_commit(src, dst, dtype=torch.int32)


def test_commit_kv_empty_is_noop():
    pools = make_pools(2, 16)
    before = [p.clone() for p in pools]
    empty = torch.empty(0, dtype=torch.int64, device=DEVICE)
    commit_kv(pools, empty, empty)
    assert all(torch.equal(a, b) for a, b in zip(pools, before))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_store_and_commit_capture_in_cuda_graph():
    dev = torch.device("cuda")
    pools = make_pools(8, 16, device=dev)
    expected = [p.clone() for p in pools]
    k, v = torch.randn(2, 6, 3, 64, device=dev)
    slots = torch.tensor([3, 4, 5, PAD_ID, 70, 71], device=dev)
    src, dst = torch.tensor([70, 71], device=dev), torch.tensor([6, 7], device=dev)
    store_kv(k, v, pools[0][0, 0], pools[0][0, 1], slots)  # compile outside the capture
    commit_kv(pools, src, dst)
    pools_graph = [p.clone() for p in expected]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        store_kv(k, v, pools_graph[0][0, 0], pools_graph[0][0, 1], slots)
        commit_kv(pools_graph, src, dst)
    graph.replay()
    store_kv_ref(k, v, expected[0][0, 0], expected[0][0, 1], slots)
    commit_kv_ref(expected, src, dst)
    torch.cuda.synchronize()
    for got, want in zip(pools_graph, expected):
        assert torch.equal(got, want)
