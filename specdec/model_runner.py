"""ModelRunner: packs per-request segments into one flattened forward over the pool.

A segment is one request's new tokens this forward: a prefill chunk or decode
token (causal), or draft-tree nodes (ancestor mask; node i sits in lookahead
slot `num_computed + i` at rotary position `num_computed + depth_i`). Target
verification and draft proposal both build segments, so both share one packer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from specdec.attention import AttentionMetadata, PAD_ID, pack_tree_mask
from specdec.draft_tree import DraftTree
from specdec.request import Request
from specdec.scheduler import SchedulerOutput


@dataclass(slots=True)
class Segment:
    token_ids: list[int]            # [q] new tokens
    positions: list[int]            # [q] rotary positions
    start: int                      # KV position of the first new token; keys are [0, start + q)
    block_table: list[int]
    tree_mask: torch.Tensor | None  # [q, words] int32 packed ancestor bits; None = causal
    logit_rows: list[int]           # rows (0..q-1) whose logits are wanted


@dataclass(slots=True)
class StepInputs:
    input_ids: torch.Tensor        # [T] int64
    positions: torch.Tensor        # [T] int64
    meta: AttentionMetadata
    logits_indices: torch.Tensor   # [R] int64, flat rows whose logits are needed
    cu_logits: list[int]           # [B+1] prefix sums: segment b owns logits rows cu[b]:cu[b+1]


def slot_of(block_table: list[int], position: int, block_size: int) -> int:
    return block_table[position // block_size] * block_size + position % block_size


def causal_segment(req: Request, start: int, num_new: int, want_last: bool) -> Segment:
    """A prefill chunk (or decode token). Generated tokens recomputed after a preemption are
    a chain-shaped "tree": they take the row path, as when they were first decoded one at a
    time, so recomputing them gives the same bits (prefill chunks go through SDPA, whose
    rounding depends on the chunk; the scheduler never mixes prompt and generated tokens
    in one chunk)."""
    ids, positions = req.token_ids[start:start + num_new], list(range(start, start + num_new))
    logit_rows = [num_new - 1] if want_last else []
    if num_new > 1 and start >= req.num_prompt_tokens:
        chain = pack_tree_mask(torch.ones(num_new, num_new, dtype=torch.bool).tril())
        return Segment(ids, positions, start, req.block_table, chain, logit_rows)
    return Segment(ids, positions, start, req.block_table, None, logit_rows)


def tree_segment(req: Request, tree: DraftTree) -> Segment:
    start = req.num_computed_tokens
    return Segment(list(tree.token_ids), [start + d for d in tree.depths], start, req.block_table,
                   tree.packed_mask(), list(range(tree.num_nodes)))


def target_segments(batch: SchedulerOutput, trees: list[DraftTree | None]) -> list[Segment]:
    """The target forward: prefill chunks / decode tokens, or whole trees for speculating requests."""
    segs = []
    for s, tree in zip(batch.scheduled, trees):
        if tree is not None and tree.num_nodes > 1:
            assert s.num_new_tokens == 1 and tree.num_nodes <= 1 + s.num_lookahead
            segs.append(tree_segment(s.req, tree))
        else:
            segs.append(causal_segment(s.req, s.req.num_computed_tokens, s.num_new_tokens, s.produces_token))
    return segs


def pack_segments(segs: list[Segment], block_size: int, device: torch.device | str) -> StepInputs:
    ids, pos, slots, logit_rows, cu_logits = [], [], [], [], [0]
    q_lens, seq_lens, is_tree = [], [], []
    num_words = max((s.tree_mask.shape[1] for s in segs if s.tree_mask is not None), default=0)
    mask_rows = []
    for seg in segs:
        q = len(seg.token_ids)
        flat0 = len(ids)
        ids += seg.token_ids
        pos += seg.positions
        slots += [slot_of(seg.block_table, seg.start + i, block_size) for i in range(q)]
        logit_rows += [flat0 + r for r in seg.logit_rows]
        cu_logits.append(len(logit_rows))
        q_lens.append(q)
        seq_lens.append(seg.start + q)
        is_tree.append(seg.tree_mask is not None)
        if num_words:
            rows = torch.zeros(q, num_words, dtype=torch.int32)
            if seg.tree_mask is not None:
                rows[:, :seg.tree_mask.shape[1]] = seg.tree_mask
            mask_rows.append(rows)
    tables = [seg.block_table for seg in segs]
    table_tensor = torch.full((len(tables), max(len(t) for t in tables)), PAD_ID, dtype=torch.int32)
    for b, t in enumerate(tables):
        table_tensor[b, :len(t)] = torch.tensor(t, dtype=torch.int32)
    cu_q = [0]
    for q in q_lens:
        cu_q.append(cu_q[-1] + q)
    meta = AttentionMetadata(
        cu_seqlens_q=torch.tensor(cu_q, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        block_tables=table_tensor.to(device),
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        tree_mask=torch.cat(mask_rows).to(device) if num_words else None,
        is_tree=torch.tensor(is_tree, dtype=torch.int32, device=device) if num_words else None,
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


def build_step_inputs(batch: SchedulerOutput, trees: list[DraftTree | None], block_size: int,
                      device: torch.device | str) -> StepInputs:
    return pack_segments(target_segments(batch, trees), block_size, device)


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
    def forward(self, inputs: StepInputs, capture_layers: tuple[int, ...] = ()
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """One forward over the flattened batch -> logits [R, V] fp32 for inputs.logits_indices.

        With `capture_layers` also the residual streams entering those layers for EVERY row
        (the EAGLE proposer needs prefill rows too): (logits, features [T, len * hidden] fp32).
        """
        if not capture_layers:
            hidden = self.model(inputs.input_ids, inputs.positions, self.kv, inputs.meta, self.attn)
            return self.model.compute_logits(hidden.index_select(0, inputs.logits_indices))
        hidden, feats = self.model(inputs.input_ids, inputs.positions, self.kv, inputs.meta, self.attn,
                                   capture_layers)
        return self.model.compute_logits(hidden.index_select(0, inputs.logits_indices)), feats

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
