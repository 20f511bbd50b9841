"""KVPool: the physical K/V tensors, one per model, indexed by shared block ids.

Target and draft each get their own tensor (layer counts and head shapes
differ) but the SAME block ids, so one BlockManager allocation and one block
table per request serve both. A slot is `block_id * block_size + offset`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(slots=True, frozen=True)
class KVSpec:
    """Shape of one model's cache."""
    num_layers: int
    num_kv_heads: int
    head_dim: int


def bytes_per_block(specs: list[KVSpec], block_size: int, dtype: torch.dtype) -> int:
    elem = torch.tensor([], dtype=dtype).element_size()
    return sum(2 * s.num_layers * block_size * s.num_kv_heads * s.head_dim * elem for s in specs)


class KVPool:
    def __init__(self, specs: list[KVSpec], num_blocks: int, block_size: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu"):
        assert num_blocks > 0 and block_size > 0
        self.specs = specs
        self.num_blocks = num_blocks
        self.block_size = block_size
        # kv[m]: [num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]
        # kv[m][layer, 0] / kv[m][layer, 1] are contiguous K / V caches of one layer.
        self.kv = [
            torch.zeros(s.num_layers, 2, num_blocks, block_size, s.num_kv_heads, s.head_dim,
                        dtype=dtype, device=device)
            for s in specs
        ]

    @classmethod
    def from_budget(cls, specs: list[KVSpec], memory_bytes: int, block_size: int,
                    dtype: torch.dtype, device: torch.device | str = "cpu") -> "KVPool":
        num_blocks = memory_bytes // bytes_per_block(specs, block_size, dtype)
        if num_blocks < 1:
            raise ValueError(f"KV memory budget of {memory_bytes} bytes holds no block of "
                             f"{block_size} tokens; raise kv_cache_memory")
        return cls(specs, int(num_blocks), block_size, dtype, device)

    def layer_cache(self, model_index: int, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V cache of one layer: each [num_blocks, block_size, num_kv_heads, head_dim]."""
        kv = self.kv[model_index]
        return kv[layer, 0], kv[layer, 1]
