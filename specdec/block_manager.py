"""BlockManager: block ids, ref counts and the prefix cache. Never touches tensors.

A block's hash chains its parent's hash with its own token ids, so equal hashes
mean equal prefixes. Freed blocks keep their hash and stay in the prefix cache
until they are reused (least recently freed first). "No room" is a return
value: the scheduler decides whom to preempt.
"""
from __future__ import annotations

from collections import OrderedDict

from specdec.request import Request


def block_hash(parent_hash: int | None, token_ids: tuple[int, ...]) -> int:
    return hash((parent_hash, token_ids))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self.hash_of_block: list[int | None] = [None] * num_blocks
        self.cached_blocks: dict[int, int] = {}                    # hash -> block id
        # free blocks, oldest-freed first; an OrderedDict so a cache hit can take
        # a block out of the middle in O(1)
        self.free_blocks: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        # per request: hashes of its full, committed blocks (prefix-cache keys)
        self.block_hashes: dict[str, list[int]] = {}

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    def blocks_needed(self, num_slots: int) -> int:
        return (num_slots + self.block_size - 1) // self.block_size

    # ---- prefix cache -------------------------------------------------------
    def match_prefix(self, req: Request) -> int:
        """Attach cached blocks covering a prefix of a new request's tokens.

        Returns the number of tokens whose K/V are reused. At least one token is
        always left to compute, since the step needs logits of the last one.
        """
        assert not req.block_table and req.num_computed_tokens == 0
        if not self.enable_prefix_caching:
            return 0
        hashes: list[int] = []
        parent = None
        max_blocks = (req.num_tokens - 1) // self.block_size
        for i in range(max_blocks):
            h = block_hash(parent, tuple(req.token_ids[i * self.block_size:(i + 1) * self.block_size]))
            block = self.cached_blocks.get(h)
            if block is None:
                break
            self._take(block)
            req.block_table.append(block)
            hashes.append(h)
            parent = h
        self.block_hashes[req.request_id] = hashes
        return len(hashes) * self.block_size

    def register_full_blocks(self, req: Request) -> None:
        """Put the request's newly full, committed blocks into the prefix cache."""
        if not self.enable_prefix_caching:
            return
        hashes = self.block_hashes.setdefault(req.request_id, [])
        num_full = req.num_computed_tokens // self.block_size
        for i in range(len(hashes), num_full):
            parent = hashes[-1] if hashes else None
            h = block_hash(parent, tuple(req.token_ids[i * self.block_size:(i + 1) * self.block_size]))
            block = req.block_table[i]
            hashes.append(h)
            if h not in self.cached_blocks and self.hash_of_block[block] is None:
                self.cached_blocks[h] = block
                self.hash_of_block[block] = h

    # ---- allocation -----------------------------------------------------------
    def can_allocate(self, req: Request, num_slots: int) -> bool:
        return self.blocks_needed(num_slots) - len(req.block_table) <= self.num_free_blocks

    def allocate(self, req: Request, num_slots: int) -> bool:
        """Grow the request's block table to hold `num_slots` token slots.

        Returns False (and allocates nothing) when the pool has no room.
        """
        extra = self.blocks_needed(num_slots) - len(req.block_table)
        if extra > self.num_free_blocks:
            return False
        for _ in range(max(extra, 0)):
            block, _ = self.free_blocks.popitem(last=False)
            self._evict(block)
            self.ref_counts[block] = 1
            req.block_table.append(block)
        return True

    def truncate(self, req: Request, num_slots: int) -> None:
        """Rollback: release the blocks past the first `num_slots` slots."""
        keep = self.blocks_needed(num_slots)
        while len(req.block_table) > keep:
            self._release(req.block_table.pop())

    def free(self, req: Request) -> None:
        # release in reverse so the tail (least shareable) is reused first
        for block in reversed(req.block_table):
            self._release(block)
        req.block_table.clear()
        self.block_hashes.pop(req.request_id, None)

    # ---- internals --------------------------------------------------------------
    def _take(self, block: int) -> None:
        if self.ref_counts[block] == 0:
            del self.free_blocks[block]
        self.ref_counts[block] += 1

    def _release(self, block: int) -> None:
        assert self.ref_counts[block] > 0, f"double free of block {block}"
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            self.free_blocks[block] = None

    def _evict(self, block: int) -> None:
        h = self.hash_of_block[block]
        if h is not None:
            if self.cached_blocks.get(h) == block:
                del self.cached_blocks[h]
            self.hash_of_block[block] = None
