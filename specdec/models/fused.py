"""The 4-bit CPU fast path's decoder layers on fused C++ ops (kernels/cpu/fused.cpp).

Same math and the same rounding points as `DecoderLayer.forward` over `Int4Linear`s
(bf16 into each int4 matmul, bf16 out of it, float32 residual stream, KV and attention),
in ~10 calls per layer instead of ~200 aten ops and their Python. A step whose every
query row takes the row path (decode tokens, draft trees: the steady state) runs all
layers in ONE call (`forward_rows`). A step with a prefill chunk goes layer by layer
through the same ops, with SDPA for the chunk's rows; the decode / tree rows in such a
step still go through the same row kernel, so their bits do not depend on what else was
scheduled with them (greedy speculation == plain decoding, tests/test_speculative.py).

Used when every layer linear is a bias-free Int4Linear, the model dtype is float32 and the
attention backend is the CPU one; anything else keeps `DecoderLayer.forward`.
"""
from __future__ import annotations

import torch

from specdec.attention import AttentionMetadata, TorchAttention
from specdec.models.quant import Int4Linear
from specdec.row_attention import build_row_batch, is_row_segment

LINEARS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


class FusedLayers:
    def __init__(self, model, ops):
        cfg = model.cfg
        self.ops = ops
        self.Hq, self.Hkv = cfg.num_heads, cfg.num_kv_heads
        self.eps, self.scale = float(cfg.rms_norm_eps), cfg.head_dim ** -0.5
        self.group = model.layers[0].qkv_proj.group
        self.cos, self.sin = model.rope.cos, model.rope.sin
        self.layer_weights = []   # 10 per layer, in fused.cpp's order (see layer_qkv)
        for layer in model.layers:
            lw = [layer.input_layernorm.weight.data]
            for name in LINEARS:
                lin = getattr(layer, name)
                lw += [lin.packed, lin.scale_zero]
                if name == "o_proj":
                    lw.append(layer.post_attention_layernorm.weight.data)
            self.layer_weights.append(lw)

    @staticmethod
    def build(model) -> "FusedLayers | None":
        """A driver for `model`, or None where the fused path does not apply."""
        if model.dtype != torch.float32 or model.rope.cos.device.type != "cpu":
            return None
        for layer in model.layers:
            lins = [getattr(layer, n) for n in LINEARS]
            if not all(isinstance(m, Int4Linear) and m.bias is None for m in lins):
                return None
            if len({m.group for m in lins}) != 1:
                return None
        from kernels.cpu import load
        ops = load()
        return None if ops is None else FusedLayers(model, ops)

    def accepts(self, kv: torch.Tensor, attn_backend) -> bool:
        return (type(attn_backend) is TorchAttention and kv.dtype == torch.float32
                and kv.is_contiguous())

    def forward(self, x: torch.Tensor, positions: torch.Tensor, kv: torch.Tensor,
                meta: AttentionMetadata, attn_backend: TorchAttention,
                capture_layers: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """x: [T, hidden] float32 (consumed: updated in place). Returns (x, {layer: residual
        entering it} for capture_layers)."""
        x = x.contiguous()
        positions = positions.to(torch.int64)
        slots = meta.slot_mapping.to(torch.int64)
        block_size = kv.shape[3]
        row_segs = [b for b in range(len(meta.q_lens_cpu)) if is_row_segment(meta, b)]
        if row_segs and meta.rows is None:
            meta.rows = build_row_batch(meta, row_segs, block_size, x.device)
        if len(row_segs) == len(meta.q_lens_cpu):     # one call, EAGLE's features included
            layers = sorted(set(capture_layers))
            out = self.ops.forward_rows(x, positions, self.cos, self.sin, kv, slots, meta.rows.key_slots,
                                        meta.rows.lengths, self.layer_weights, layers, self.group, self.eps,
                                        self.scale, self.Hq, self.Hkv)
            return out[0], dict(zip(layers, out[1:]))
        captured = {}
        for i, w in enumerate(self.layer_weights):
            if i in capture_layers:
                captured[i] = x.clone()
            kc, vc = kv[i, 0], kv[i, 1]
            q = self.ops.layer_qkv(x, w, self.cos, self.sin, positions, kc, vc, slots, self.group,
                                   self.eps, self.Hq, self.Hkv)
            a = self._mixed_attention(q, kc, vc, meta, attn_backend, row_segs)
            self.ops.layer_out(x, a, w, self.group, self.eps)
        return x, captured

    def _mixed_attention(self, q, kc, vc, meta, attn_backend, row_segs) -> torch.Tensor:
        """Prefill chunks through SDPA, decode / tree rows through the row kernel: [T, Hq*D] bf16."""
        out = attn_backend._forward_prefill(q, kc, vc, meta, self.scale, set(row_segs))
        out = out.reshape(q.shape[0], -1).to(torch.bfloat16)
        if row_segs:
            idx = meta.rows.query_index
            out.index_copy_(0, idx, self.ops.row_attention(q.index_select(0, idx), kc, vc,
                                                           meta.rows.key_slots, meta.rows.lengths,
                                                           self.scale))
        return out
