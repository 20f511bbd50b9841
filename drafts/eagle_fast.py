"""The compact EAGLE head's forward on the fused CPU ops (kernels/cpu/fused.cpp).

A draft step is tiny (a few rows through one decoder layer), so in eager PyTorch its ~60
small ops and their Python cost more than the arithmetic. Here a draft forward is three
calls: `eagle_fuse` (feature norms + fc, at catch-up), `eagle_layer` (norms, 4-bit q/k/v,
RoPE + the K/V write into the head's pool layer, row attention, o_proj, MLP) and the output
rows (`rms_norm_bf16` + the Q8_0 `q8_linear`). Same weights and rounding points as the eager
compact head (bf16 into every 4-bit matmul); drafts are proposals, so nothing here has to
match the eager path bit for bit -- the target's verification keeps the output exact.

Every segment takes the row path, the catch-up's causal rows too (row i sees the committed
keys and the chunk's rows up to i); a segment longer than `MAX_ROWS` (the first catch-up over
a whole prompt) goes through the eager head and SDPA instead.
"""
from __future__ import annotations

import torch

from specdec.attention import TorchAttention
from specdec.models.quant import Q8BlockLinear, quantize_q8_0
from specdec.row_attention import causal_rows

MAX_ROWS = 64


class FastHead:
    def __init__(self, head, ops):
        cfg = head.cfg
        self.ops, self.eps = ops, float(cfg.rms_norm_eps)
        self.Hq, self.Hkv, self.scale = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim ** -0.5
        self.group = head.qkv_proj.group
        self.feature_norms = [n.weight.data for n in head.feature_norms]
        self.fc = (head.fc.packed, head.fc.scale_zero)
        self.layer = [head.hidden_norm.weight.data, head.input_norm.weight.data,
                      head.qkv_proj.packed, head.qkv_proj.scale_zero, head.o_proj.packed, head.o_proj.scale_zero,
                      head.post_attention_norm.weight.data, head.gate_up_proj.packed,
                      head.gate_up_proj.scale_zero, head.down_proj.packed, head.down_proj.scale_zero]
        self.norm = head.norm.weight.data
        self.out = Q8BlockLinear(quantize_q8_0(head.lm_head), None, ops)   # the target's Q8_0 rows again

    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        return self.ops.eagle_fuse(features.float().contiguous(), self.feature_norms, *self.fc, self.group,
                                   self.eps)

    @staticmethod
    def takes_pool(kv: torch.Tensor) -> bool:
        return kv.dtype == torch.float32 and kv.is_contiguous()

    def accepts(self, kv: torch.Tensor, meta, attn_backend) -> bool:
        """Causal segments (the catch-up) of at most MAX_ROWS rows on the CPU backend."""
        return (type(attn_backend) is TorchAttention and self.takes_pool(kv) and not any(meta.is_tree_cpu)
                and max(meta.q_lens_cpu) <= MAX_ROWS)

    def forward(self, hidden: torch.Tensor, emb: torch.Tensor, positions: torch.Tensor, rope,
                kv: torch.Tensor, meta) -> torch.Tensor:
        """Causal segments packed by pack_segments (the catch-up), every row on the row path."""
        if meta.rows is None:
            meta.rows = causal_rows(meta, kv.shape[3], hidden.device)
        return self.forward_rows(hidden, emb, positions, meta.slot_mapping, meta.rows, rope, kv)

    def forward_rows(self, hidden: torch.Tensor, emb: torch.Tensor, positions: torch.Tensor,
                     slots: torch.Tensor, rows, rope, kv: torch.Tensor) -> torch.Tensor:
        return self.ops.eagle_layer(hidden.float().contiguous(), emb.float().contiguous(), self.layer,
                                    rope.cos, rope.sin, positions.to(torch.int64), kv[0, 0], kv[0, 1],
                                    slots.to(torch.int64), rows.key_slots, rows.lengths, self.group,
                                    self.eps, self.scale, self.Hq, self.Hkv)

    def logits(self, a: torch.Tensor) -> torch.Tensor:
        return self.out(self.ops.rms_norm_bf16(a.contiguous(), self.norm, self.eps))
