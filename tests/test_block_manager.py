"""BlockManager: allocation, ref counts, rollback and the prefix cache, on plain Requests."""
from __future__ import annotations

from specdec.block_manager import BlockManager
from specdec.request import Request
from specdec.sampling_params import SamplingParams

BS = 4


def make_req(rid: str, token_ids: list[int]) -> Request:
    return Request(rid, list(token_ids), SamplingParams(), eos_token_ids=(0,))


def computed(bm: BlockManager, req: Request) -> Request:
    """Allocate and mark every token of `req` computed, registering its full blocks."""
    assert bm.allocate(req, req.num_tokens)
    req.num_computed_tokens = req.num_tokens
    bm.register_full_blocks(req)
    return req


def assert_pool_consistent(bm: BlockManager, reqs: list[Request]) -> None:
    refs = [0] * bm.num_blocks
    for r in reqs:
        for b in r.block_table:
            refs[b] += 1
    assert bm.ref_counts == refs
    assert set(bm.free_blocks) == {b for b in range(bm.num_blocks) if refs[b] == 0}


def test_allocate_grows_by_blocks_and_free_returns_them():
    bm = BlockManager(8, BS)
    req = make_req("a", range(1, 11))
    assert bm.allocate(req, 10)
    assert len(req.block_table) == 3 and len(set(req.block_table)) == 3
    assert bm.num_free_blocks == 5
    assert all(bm.ref_counts[b] == 1 for b in req.block_table)
    assert bm.allocate(req, 12) and len(req.block_table) == 3      # still fits in 3 blocks
    assert bm.allocate(req, 13) and len(req.block_table) == 4
    assert_pool_consistent(bm, [req])
    bm.free(req)
    assert req.block_table == [] and bm.num_free_blocks == 8
    assert bm.ref_counts == [0] * 8


def test_no_room_returns_false_and_allocates_nothing():
    bm = BlockManager(4, BS)
    a = make_req("a", range(1, 9))
    assert bm.allocate(a, 8)
    b = make_req("b", range(1, 4))
    assert bm.allocate(b, 3)
    table_before = list(b.block_table)
    assert not bm.can_allocate(b, 3 * BS + 1)
    assert not bm.allocate(b, 3 * BS + 1)                  # needs 3 more blocks, 1 is free
    assert b.block_table == table_before and bm.num_free_blocks == 1
    assert bm.can_allocate(b, 2 * BS) and bm.allocate(b, 2 * BS)
    assert bm.num_free_blocks == 0
    assert_pool_consistent(bm, [a, b])


def test_truncate_frees_the_tail():
    bm = BlockManager(8, BS)
    req = make_req("a", range(1, 6))
    assert bm.allocate(req, 16)                             # 4 blocks: 5 tokens + lookahead
    head, tail = req.block_table[:2], req.block_table[2:]
    bm.truncate(req, 5)                                     # 5 slots need 2 blocks
    assert req.block_table == head
    assert all(bm.ref_counts[b] == 0 and b in bm.free_blocks for b in tail)
    assert bm.num_free_blocks == 6
    bm.truncate(req, 8)                                     # nothing past 2 blocks to free
    assert req.block_table == head
    assert_pool_consistent(bm, [req])


def test_prefix_match_shares_blocks_with_ref_counts():
    bm = BlockManager(8, BS)
    a = computed(bm, make_req("a", range(1, 11)))           # 10 tokens: 2 full blocks cached
    b = make_req("b", list(range(1, 9)) + [50, 51, 52])     # same first 8 tokens
    assert bm.match_prefix(b) == 8
    assert b.block_table == a.block_table[:2]
    assert [bm.ref_counts[x] for x in a.block_table] == [2, 2, 1]
    assert bm.allocate(b, b.num_tokens) and len(b.block_table) == 3
    assert b.block_table[2] != a.block_table[2]
    assert_pool_consistent(bm, [a, b])
    bm.free(a)
    assert [bm.ref_counts[x] for x in b.block_table] == [1, 1, 1]
    assert_pool_consistent(bm, [b])
    bm.free(b)
    assert bm.num_free_blocks == 8


def test_prefix_match_diverging_block_is_not_reused():
    bm = BlockManager(8, BS)
    computed(bm, make_req("a", range(1, 11)))
    c = make_req("c", [1, 2, 3, 4, 5, 6, 7, 99, 9, 10])     # second block differs in one token
    assert bm.match_prefix(c) == 4


def test_prefix_match_leaves_at_least_one_token_to_compute():
    bm = BlockManager(8, BS)
    computed(bm, make_req("a", range(1, 11)))
    exact = make_req("b", range(1, 9))                      # exactly the 2 cached blocks
    assert bm.match_prefix(exact) == BS                     # the last block is recomputed
    one = make_req("c", range(1, 5))
    assert bm.match_prefix(one) == 0


def test_freed_cached_blocks_are_reused_by_a_later_match():
    bm = BlockManager(8, BS)
    a = computed(bm, make_req("a", range(1, 11)))
    cached = a.block_table[:2]
    bm.free(a)
    assert bm.num_free_blocks == 8
    b = make_req("b", range(1, 12))
    assert bm.match_prefix(b) == 8 and b.block_table == cached
    assert bm.num_free_blocks == 6                           # taken back out of the free list
    assert_pool_consistent(bm, [b])


def test_evicted_blocks_drop_their_hash():
    bm = BlockManager(4, BS)
    a = computed(bm, make_req("a", range(1, 11)))
    bm.free(a)
    assert len(bm.cached_blocks) == 2
    big = make_req("big", range(100, 116))
    assert bm.allocate(big, 16)                              # takes every block, cached ones too
    assert bm.cached_blocks == {} and bm.hash_of_block == [None] * 4
    bm.free(big)
    assert bm.match_prefix(make_req("again", range(1, 11))) == 0


def test_prefix_caching_off():
    bm = BlockManager(8, BS, enable_prefix_caching=False)
    a = computed(bm, make_req("a", range(1, 11)))
    assert bm.cached_blocks == {}
    assert bm.match_prefix(make_req("b", range(1, 11))) == 0
    bm.free(a)
    assert bm.num_free_blocks == 8
