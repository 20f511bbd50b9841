"""Block-accounting invariants, checked after every step when enabled.

On in tests (`SPECDEC_CHECK_INVARIANTS=1`, set by tests/conftest.py, or
`EngineConfig.check_invariants`), off by default: it walks every block, which
costs O(num_blocks) per step. A violation is an engine bug, so it raises
InvariantError out of `step()` instead of being contained.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Iterable

from specdec.block_manager import BlockManager
from specdec.request import Request

ENV_FLAG = "SPECDEC_CHECK_INVARIANTS"


class InvariantError(AssertionError):
    pass


def invariants_enabled(config_flag: bool) -> bool:
    return config_flag or os.environ.get(ENV_FLAG, "") not in ("", "0")


def check_block_invariants(bm: BlockManager, live: Iterable[Request], stepped: Iterable[Request]) -> None:
    """Raise InvariantError unless the pool's accounting adds up.

    live: the engine's unfinished requests (running or waiting); stepped: the
    requests scheduled this step, finished or not. Checks: each block's ref
    count equals the number of live block tables holding it; a block is on the
    free list iff its ref count is 0; blocks in use = distinct blocks of live
    requests; no finished request holds a block; the prefix cache maps each
    hash to a block carrying that hash.
    """
    problems: list[str] = []
    live = list(live)
    holders = Counter(b for r in live for b in r.block_table)
    for r in live:
        if r.is_finished:
            problems.append(f"finished request {r.request_id} is still live")
        if len(set(r.block_table)) != len(r.block_table):
            problems.append(f"request {r.request_id} lists a block twice: {r.block_table}")
    in_use = {b: rc for b, rc in enumerate(bm.ref_counts) if rc != 0}
    for b, rc in in_use.items():
        if rc < 0:
            problems.append(f"block {b} has ref count {rc}")
        if rc != holders.get(b, 0):
            problems.append(f"block {b} has ref count {rc} but {holders.get(b, 0)} live holders")
        if b in bm.free_blocks:
            problems.append(f"block {b} is in use (ref count {rc}) and on the free list")
    for b in holders.keys() - in_use.keys():
        problems.append(f"block {b} is held by a live request but has ref count 0")
    if len(bm.free_blocks) != bm.num_blocks - len(in_use):
        problems.append(f"free list has {len(bm.free_blocks)} blocks, expected "
                        f"{bm.num_blocks - len(in_use)} ({len(in_use)} in use)")
    if len(in_use) != len(holders):
        problems.append(f"{len(in_use)} blocks in use but live requests hold {len(holders)}")
    for r in stepped:
        if r.is_finished and r.block_table:
            problems.append(f"finished request {r.request_id} still holds blocks {r.block_table}")
    for h, b in bm.cached_blocks.items():
        if bm.hash_of_block[b] != h:
            problems.append(f"prefix cache maps a hash to block {b}, which carries another hash")
    if problems:
        raise InvariantError("block accounting broken: " + "; ".join(problems[:8]))
