"""Triton attention backend: the TorchAttention contract on the Triton kernels.

Same methods as `specdec.attention.TorchAttention`; the engine picks this one
when its tensors live on CUDA (on CPU it also runs, under TRITON_INTERPRET=1,
which is how the tests exercise it). Only device tensors of the metadata are
read, plus `meta.q_lens_cpu` for the host-side `max_q_len` that sizes the
grid, so a step built from fixed-shape metadata is CUDA-graph capturable.
"""
from __future__ import annotations

import torch

from kernels.kv_store import store_kv
from kernels.tree_attention import tree_attention
from specdec.attention import AttentionMetadata


class TritonAttention:
    """Paged tree / causal attention backed by `kernels.tree_attention`."""

    def __init__(self, num_kv_splits: int | None = None):
        # None: choose per launch from shapes and the SM count.
        self.num_kv_splits = num_kv_splits

    def store_kv(self, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                 v_cache: torch.Tensor, meta: AttentionMetadata) -> None:
        """k, v: [T, Hkv, D]; caches: [num_blocks, block_size, Hkv, D] (mutated)."""
        store_kv(k, v, k_cache, v_cache, meta.slot_mapping)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                scale: float) -> torch.Tensor:
        """q: [T, Hq, D]; k, v: [T, Hkv, D] (new tokens). Returns [T, Hq, D]. Mutates the caches."""
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()   # the model hands out views
        self.store_kv(k, v, k_cache, v_cache, meta)
        max_q_len = max(meta.q_lens_cpu, default=0)
        # is_tree without a tree_mask (or vice versa) means "all causal".
        has_tree = meta.tree_mask is not None and meta.is_tree is not None
        return tree_attention(
            q, k_cache, v_cache, meta.block_tables, meta.cu_seqlens_q, meta.seq_lens,
            meta.tree_mask if has_tree else None, meta.is_tree if has_tree else None,
            scale, max_q_len, num_kv_splits=self.num_kv_splits,
        )
