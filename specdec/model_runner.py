"""ModelRunner: flattens a scheduled batch (+ draft trees) into one forward over the pool.

Every step is ONE target forward over all requests' new tokens: prefill-chunk
tokens (causal) and draft-tree nodes (ancestor mask; node i sits in lookahead
slot `num_computed + i` at rotary position `num_computed + depth_i`). It
returns logits only for the rows that are sampled or verified.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from specdec.attention import AttentionMetadata, PAD_ID
from specdec.draft_tree import DraftTree
from specdec.scheduler import SchedulerOutput


@dataclass(slots=True)
class StepInputs:
    input_ids: torch.Tensor        # [T] int64
    positions: torch.Tensor        # [T] int64
    meta: AttentionMetadata
    logits_indices: torch.Tensor   # [R] int64, flat rows whose logits are needed
    cu_logits: list[int]           # [B+1] prefix sums: request b owns logits rows cu[b]:cu[b+1]


def slot_of(block_table: list[int], position: int, block_size: int) -> int:
    return block_table[position // block_size] * block_size + position % block_size


def build_step_inputs(batch: SchedulerOutput, trees: list[DraftTree | None], block_size: int,
                      device: torch.device | str) -> StepInputs:
    ids, pos, slots, logit_rows = [], [], [], []
    q_lens, seq_lens, tables, is_tree, tree_rows = [], [], [], [], []
    cu_logits = [0]
    max_nodes = max((t.num_nodes for t in trees if t is not None), default=1)
    num_words = (max_nodes + 31) // 32
    for s, tree in zip(batch.scheduled, trees):
        req, start = s.req, s.req.num_computed_tokens
        flat0 = len(ids)
        if tree is not None and tree.num_nodes > 1:
            assert s.num_new_tokens == 1 and tree.num_nodes <= 1 + s.num_lookahead
            ids += tree.token_ids
            pos += [start + d for d in tree.depths]
            slots += [slot_of(req.block_table, start + i, block_size) for i in range(tree.num_nodes)]
            logit_rows += range(flat0, flat0 + tree.num_nodes)
            packed = tree.packed_mask()
            rows = torch.zeros(tree.num_nodes, num_words, dtype=torch.int32)
            rows[:, :packed.shape[1]] = packed
            tree_rows.append(rows)
            q_lens.append(tree.num_nodes)
            is_tree.append(True)
        else:
            n = s.num_new_tokens
            ids += req.token_ids[start:start + n]
            pos += range(start, start + n)
            slots += [slot_of(req.block_table, p, block_size) for p in range(start, start + n)]
            if s.produces_token:
                logit_rows.append(flat0 + n - 1)
            tree_rows.append(torch.zeros(n, num_words, dtype=torch.int32))
            q_lens.append(n)
            is_tree.append(False)
        seq_lens.append(start + q_lens[-1])
        tables.append(req.block_table)
        cu_logits.append(len(logit_rows))
    max_blocks = max(len(t) for t in tables)
    table_tensor = torch.full((len(tables), max_blocks), PAD_ID, dtype=torch.int32)
    for b, t in enumerate(tables):
        table_tensor[b, :len(t)] = torch.tensor(t, dtype=torch.int32)
    any_tree = any(is_tree)
    meta = AttentionMetadata(
        cu_seqlens_q=torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        block_tables=table_tensor.to(device),
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        tree_mask=torch.cat(tree_rows).to(device) if any_tree else None,
        is_tree=torch.tensor(is_tree, dtype=torch.int32, device=device) if any_tree else None,
        q_lens_cpu=q_lens, seq_lens_cpu=seq_lens,
        block_tables_cpu=[list(t) for t in tables], is_tree_cpu=is_tree,
    )
    return StepInputs(
        input_ids=torch.tensor(ids, dtype=torch.int64, device=device),
        positions=torch.tensor(pos, dtype=torch.int64, device=device),
        meta=meta,
        logits_indices=torch.tensor(logit_rows, dtype=torch.int64, device=device),
        cu_logits=cu_logits,
    )


class ModelRunner:
    """Owns one model and its pool tensor; runs forwards."""

    def __init__(self, model, kv: torch.Tensor, block_size: int, attn_backend,
                 device: torch.device | str):
        self.model = model
        self.kv = kv                 # [L, 2, num_blocks, block_size, Hkv, D]
        self.block_size = block_size
        self.attn = attn_backend
        self.device = device

    @torch.inference_mode()
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        """One forward over the flattened batch -> logits [R, V] fp32 for inputs.logits_indices."""
        hidden = self.model(inputs.input_ids, inputs.positions, self.kv, inputs.meta, self.attn)
        return self.model.compute_logits(hidden.index_select(0, inputs.logits_indices))

    @torch.inference_mode()
    def commit_kv(self, src_slots: list[int], dst_slots: list[int]) -> None:
        """Move accepted tree nodes' K/V to their committed slots (all layers, K and V).

        Pairs are applied as one gather then one scatter, so a destination that is
        another pair's source still reads the old value.
        """
        if not src_slots:
            return
        flat = self.kv.view(self.kv.shape[0], 2, -1, *self.kv.shape[4:])  # (L, 2, slots, Hkv, D)
        src = torch.tensor(src_slots, dtype=torch.int64, device=self.kv.device)
        dst = torch.tensor(dst_slots, dtype=torch.int64, device=self.kv.device)
        flat[:, :, dst] = flat[:, :, src]
