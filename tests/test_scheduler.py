"""Scheduler with plain Requests and no model: token budget, max_num_seqs, preemption, lookahead.

`run_step` plays the engine's part: every scheduled token is committed, and a
request that reached the end of its tokens gets one new token (id 7).
"""
from __future__ import annotations

from specdec.block_manager import BlockManager
from specdec.request import Request, RequestStatus
from specdec.sampling_params import SamplingParams
from specdec.scheduler import Scheduler, SchedulerOutput

BS = 4
NEW_TOKEN = 7


def make_req(rid: str, num_prompt: int, first: int = 100) -> Request:
    # distinct token ids per request so the prefix cache never links them
    return Request(rid, list(range(first, first + num_prompt)), SamplingParams(), eos_token_ids=(0,))


def run_step(sched: Scheduler, max_output: int | None = None) -> SchedulerOutput:
    batch = sched.schedule()
    for s in batch.scheduled:
        s.num_committed = s.num_new_tokens
        if s.produces_token:
            s.req.token_ids.append(NEW_TOKEN)
            if max_output is not None and s.req.num_output_tokens >= max_output:
                s.req.finish_reason = "length"
    sched.update(batch)
    return batch


def plan(batch: SchedulerOutput) -> dict[str, int]:
    return {s.req.request_id: s.num_new_tokens for s in batch.scheduled}


def test_chunked_prefill_under_token_budget():
    sched = Scheduler(BlockManager(32, BS), max_num_seqs=8, max_num_batched_tokens=8)
    a = make_req("a", 20)
    sched.add(a)
    chunks = []
    for _ in range(3):
        batch = run_step(sched)
        (s,) = batch.scheduled
        chunks.append((s.num_new_tokens, a.num_output_tokens))
    # 8 + 8 + 4 prompt tokens; only the last chunk reaches the end and samples a token
    assert chunks == [(8, 0), (8, 0), (4, 1)]
    assert a.num_computed_tokens == 20 and a.num_tokens == 21


def test_running_requests_take_the_budget_first():
    sched = Scheduler(BlockManager(32, BS), max_num_seqs=8, max_num_batched_tokens=8)
    a, b = make_req("a", 3, 100), make_req("b", 12, 200)
    sched.add(a)
    assert plan(run_step(sched)) == {"a": 3}
    sched.add(b)
    # a decodes 1 token, b gets the other 7 of the budget, then the rest of its prompt
    assert plan(run_step(sched)) == {"a": 1, "b": 7}
    assert plan(run_step(sched)) == {"a": 1, "b": 5}
    assert b.num_output_tokens == 1


def test_max_num_seqs_caps_the_running_set():
    sched = Scheduler(BlockManager(32, BS), max_num_seqs=2, max_num_batched_tokens=64)
    reqs = [make_req(f"r{i}", 3, 100 * (i + 1)) for i in range(4)]
    for r in reqs:
        sched.add(r)
    assert set(plan(run_step(sched, max_output=2))) == {"r0", "r1"}
    assert [r.request_id for r in sched.waiting] == ["r2", "r3"]
    assert set(plan(run_step(sched, max_output=2))) == {"r0", "r1"}   # both finish here
    assert reqs[0].is_finished and reqs[1].is_finished
    assert set(plan(run_step(sched, max_output=2))) == {"r2", "r3"}


def test_preempts_newest_running_requests_when_the_pool_is_full():
    bm = BlockManager(4, BS)
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=64)
    a, b, c, d, e = (make_req(x, 4, 100 * (i + 1)) for i, x in enumerate("abcde"))
    for r in (a, b, c, d, e):
        sched.add(r)
    assert plan(run_step(sched)) == {"a": 4, "b": 4, "c": 4, "d": 4}   # pool full; e waits
    # each now holds 5 tokens and needs a second block: a gets one by preempting the
    # newest (d), b by preempting the next newest (c)
    batch = run_step(sched)
    assert plan(batch) == {"a": 1, "b": 1}
    assert batch.preempted == [d, c]
    for r in (c, d):
        assert r.num_preemptions == 1 and r.block_table == [] and r.num_computed_tokens == 0
        assert r.status == RequestStatus.WAITING and r.num_tokens == 5     # keeps its output token
    assert list(sched.waiting) == [c, d, e]              # back at the front, in arrival order
    assert sched.running == [a, b] and bm.num_free_blocks == 0
    assert a.num_preemptions == b.num_preemptions == 0
    # once a and b finish, c and d are recomputed from scratch: their prompts first (the
    # sampled token follows as a chunk of its own), and e joins in the room left
    for r in (a, b):
        sched.finish(r)
    batch = run_step(sched)
    assert plan(batch) == {"c": 4, "d": 4, "e": 4}
    assert c.num_computed_tokens == 4 and c.num_tokens == 5 and c.num_output_tokens == 1
    for r in (c, d, e):
        sched.finish(r)
    assert bm.num_free_blocks == 4


def test_request_preempts_itself_when_it_is_the_newest():
    bm = BlockManager(2, BS)
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=64)
    a, b = make_req("a", 3, 100), make_req("b", 4, 200)
    sched.add(a)
    sched.add(b)
    run_step(sched)                                   # both prefilled, 1 block each, pool full
    batch = run_step(sched)
    # a (4 tokens) still fits its block; b (5 tokens) needs a second one and nobody newer
    # is running, so b itself goes back to waiting
    assert plan(batch) == {"a": 1} and batch.preempted == [b]
    assert sched.running == [a] and list(sched.waiting) == [b]
    assert a.num_preemptions == 0 and b.num_preemptions == 1 and b.block_table == []
    assert bm.num_free_blocks == 1


def test_lookahead_is_dropped_before_anyone_is_preempted():
    bm = BlockManager(3, BS)
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=64, lookahead_fn=lambda req: 3)
    a, b = make_req("a", 4, 100), make_req("b", 3, 200)
    sched.add(a)
    sched.add(b)
    first = run_step(sched)
    assert all(s.num_lookahead == 0 for s in first.scheduled)    # no lookahead while prefilling
    batch = sched.schedule()
    looks = {s.req.request_id: s.num_lookahead for s in batch.scheduled}
    # a: 4 computed + 1 + 3 lookahead = 8 slots = 2 blocks (takes the last free block);
    # b: 3 + 1 + 3 = 7 slots would need a second block, 3 + 1 = 4 fits in the one it has
    assert looks == {"a": 3, "b": 0}
    assert batch.preempted == [] and sched.running == [a, b]
    assert len(a.block_table) == 2 and len(b.block_table) == 1


def test_lookahead_slots_are_rolled_back_after_the_step():
    bm = BlockManager(8, BS)
    sched = Scheduler(bm, max_num_seqs=4, max_num_batched_tokens=64, lookahead_fn=lambda req: 8)
    a = make_req("a", 4)
    sched.add(a)
    run_step(sched)
    batch = sched.schedule()
    (s,) = batch.scheduled
    assert s.num_lookahead == 8 and len(a.block_table) == 4      # 4 + 1 + 8 = 13 slots
    s.num_committed = 1                                           # no draft accepted
    a.token_ids.append(NEW_TOKEN)
    sched.update(batch)
    assert a.num_computed_tokens == 5 and a.num_tokens == 6
    assert len(a.block_table) == 2 and bm.num_free_blocks == 6   # tail released


def test_lookahead_is_capped_by_the_token_budget():
    sched = Scheduler(BlockManager(16, BS), max_num_seqs=4, max_num_batched_tokens=4,
                      lookahead_fn=lambda req: 10)
    a = make_req("a", 3)
    sched.add(a)
    run_step(sched)
    (s,) = sched.schedule().scheduled
    assert s.num_new_tokens == 1 and s.num_lookahead == 3


def test_recompute_after_preemption_never_mixes_prompt_and_generated_tokens():
    """A preempted request prefills its prompt, then its generated tokens as a chunk of their
    own (which the model runner computes row by row, as they were decoded)."""
    sched = Scheduler(BlockManager(64, BS, enable_prefix_caching=False), max_num_seqs=8,
                      max_num_batched_tokens=64)
    a = make_req("a", 10)
    sched.add(a)
    for _ in range(6):                     # prefill, then 5 decode steps
        run_step(sched)
    assert a.num_output_tokens == 6
    sched._preempt(a)                      # as under memory pressure: blocks freed, recompute
    assert a.num_computed_tokens == 0
    assert plan(run_step(sched)) == {"a": 10}          # the prompt alone
    assert a.num_output_tokens == 6                    # ... and it samples nothing
    assert plan(run_step(sched)) == {"a": 6}           # then all generated tokens, sampling one
    assert a.num_output_tokens == 7
