"""Weight-only quantized linears for the CPU fast path, and the QWeight they are built from.

Weights stay in (or are brought to) a compact integer form and are multiplied with
torch's weight-only kernels, which on x86 are only vectorized for bf16 activations:
`_weight_int4pack_mm_for_cpu` (tinygemm, 4-bit, group 32, bf16 scale and zero) and
`_weight_int8pack_mm` (int8, one scale per output row). Both compute every output row
from its own input row alone, bit for bit the same whatever the number of rows M, which
is what makes a K+1-token verify step agree exactly with K+1 one-token steps
(measured for M = 1..64; see tests/test_quant.py).

GGUF blocks map onto these layouts without loss, up to rounding the fp16 block scales
to bf16:
    Q4_1   w = d*q + m        -> 4-bit, scale = d, zero = m + 8d  (tinygemm: (q-8)*scale + zero)
    Q4_0   w = d*(q-8)        -> 4-bit, scale = d, zero = 0
    Q8_0   w = d*q  (q int8)  -> two 4-bit halves, exact: with u = q + 128 = 16*hi + lo,
                                 w = (hi - 8) * 16d  +  ((lo - 8) * d + 8d)      (Int8SplitLinear)
An int8 weight with one scale per row (an HF folder quantized with quantization="int8")
runs through `_weight_int8pack_mm` instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

INT4_GROUP = 32          # tinygemm group size; GGUF Q4 blocks are 32 weights along K
COMPUTE_DTYPE = torch.bfloat16  # activations of the weight-only kernels (x86 fast path)


@dataclass(slots=True)
class QWeight:
    """An integer weight [N, K] and its per-group scales (the loader's quantized tensor).

    bits=4: q holds 0..15 (uint8), value = (q - 8) * scale + zero, groups of `group` along K.
    bits=8: q holds int8,          value = q * scale,             groups of `group` along K.
    """
    bits: int
    q: torch.Tensor              # [N, K] uint8 (4-bit values) or int8
    scale: torch.Tensor          # [N, K // group] float32
    zero: torch.Tensor | None    # [N, K // group] float32 (4-bit only)
    group: int

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)

    def dequantize(self) -> torch.Tensor:
        """float32 [N, K]."""
        N, K = self.q.shape
        q = self.q.view(N, K // self.group, self.group).float()
        if self.bits == 4:
            w = (q - 8) * self.scale[..., None] + self.zero[..., None]
        else:
            w = q * self.scale[..., None]
        return w.view(N, K)

    def map_rows(self, fn) -> "QWeight":
        """Apply a row permutation / selection `fn` (acting on dim 0) to every field."""
        return QWeight(self.bits, fn(self.q), fn(self.scale),
                       None if self.zero is None else fn(self.zero), self.group)


def cat_rows(parts: list[QWeight]) -> QWeight:
    """Stack weights along N (fused q/k/v, gate/up). All parts share bits and group."""
    first = parts[0]
    return QWeight(first.bits, torch.cat([p.q for p in parts]), torch.cat([p.scale for p in parts]),
                   None if first.zero is None else torch.cat([p.zero for p in parts]), first.group)


def can_fuse(parts: list) -> bool:
    return all(isinstance(p, QWeight) for p in parts) and len(
        {(p.bits, p.group, p.zero is None) for p in parts}) == 1


# ---- GGUF blocks -> QWeight -------------------------------------------------------------

def _unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """[rows, blocks, 16] packed bytes -> [rows, blocks, 32]: low nibbles are weights 0..15."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def from_gguf_blocks(raw: np.ndarray, kind: str, shape: tuple[int, int]) -> QWeight:
    """raw: [N, row_bytes] uint8 of GGUF blocks (`kind` in Q4_0, Q4_1, Q8_0) -> QWeight [N, K]."""
    N, K = shape
    nb = K // 32
    if kind == "Q4_1":
        blocks = raw.reshape(N, nb, 20)
        d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        q = _unpack_nibbles(blocks[..., 4:20])
        return QWeight(4, torch.from_numpy(q.reshape(N, K).astype(np.uint8)), torch.from_numpy(d),
                       torch.from_numpy(m + 8 * d), 32)
    if kind == "Q4_0":
        blocks = raw.reshape(N, nb, 18)
        d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        q = _unpack_nibbles(blocks[..., 2:18])
        return QWeight(4, torch.from_numpy(q.reshape(N, K).astype(np.uint8)), torch.from_numpy(d),
                       torch.zeros_like(torch.from_numpy(d)), 32)
    if kind == "Q8_0":
        blocks = raw.reshape(N, nb, 34)
        d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        q = blocks[..., 2:34].copy().view(np.int8)
        return QWeight(8, torch.from_numpy(q.reshape(N, K)), torch.from_numpy(d), None, 32)
    raise ValueError(f"no QWeight mapping for GGUF type {kind}")


# ---- float -> QWeight (HF folders quantized at load) -------------------------------------

def quantize_int4(w: torch.Tensor, group: int = INT4_GROUP) -> QWeight:
    """Asymmetric min/max 4-bit quantization in groups of `group` along K."""
    N, K = w.shape
    g = w.float().view(N, K // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=1e-12)
    q = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.uint8)
    return QWeight(4, q.view(N, K), scale, lo + 8 * scale, group)


def quantize_int8(w: torch.Tensor) -> QWeight:
    """Symmetric per-output-row int8."""
    w = w.float()
    scale = (w.abs().amax(1, keepdim=True) / 127).clamp(min=1e-12)
    q = (w / scale).round().clamp(-127, 127).to(torch.int8)
    return QWeight(8, q, scale, None, w.shape[1])


def quantize_q8_0(w: torch.Tensor, group: int = 32) -> QWeight:
    """Symmetric int8 per group of `group` along K (GGUF Q8_0's layout)."""
    N, K = w.shape
    g = w.float().view(N, K // group, group)
    scale = (g.abs().amax(-1) / 127).clamp(min=1e-12)
    q = (g / scale[..., None]).round().clamp(-127, 127).to(torch.int8)
    return QWeight(8, q.view(N, K), scale, None, group)


def quantize(w: torch.Tensor, mode: str) -> QWeight:
    if mode == "int4":
        return quantize_int4(w)
    if mode == "int8":
        return quantize_int8(w)
    raise ValueError(f"unknown quantization {mode!r}")


# ---- modules ------------------------------------------------------------------------------

class Int4Linear(nn.Module):
    """y = x @ W^T (+ b) with W in tinygemm's packed 4-bit layout; x cast to bf16 for the op."""

    def __init__(self, w: QWeight, bias: torch.Tensor | None):
        super().__init__()
        assert w.bits == 4 and w.group in (32, 64, 128, 256), (w.bits, w.group)
        N, K = w.shape
        self.out_features, self.in_features, self.group = N, K, w.group
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            w.q.to(torch.int32).contiguous(), 1))
        # [K // group, N, 2]: tinygemm's scale-and-zero layout
        self.register_buffer("scale_zero", torch.stack([w.scale, w.zero], -1).transpose(0, 1)
                             .contiguous().to(COMPUTE_DTYPE))
        self.register_buffer("bias", None if bias is None else bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(COMPUTE_DTYPE), self.packed, self.group, self.scale_zero).float()
        return y if self.bias is None else y + self.bias


class Int8SplitLinear(nn.Module):
    """y = x @ W^T (+ b) for an int8 W with per-group scales (GGUF Q8_0), exactly, as the sum of
    two 4-bit tinygemm products (high and low nibbles of q + 128). Faster than the int8 kernel
    on the 49152-row LM head here (two int4 passes read as many bytes as one int8 pass, and
    tinygemm's M=1 path is the better tuned), and it keeps the per-block scales instead of
    requantizing to one scale per row."""

    def __init__(self, w: QWeight, bias: torch.Tensor | None):
        super().__init__()
        assert w.bits == 8 and w.group in (32, 64, 128, 256), (w.bits, w.group)
        u = w.q.to(torch.int16) + 128                                  # 0..255
        hi, lo = (u >> 4).to(torch.uint8), (u & 15).to(torch.uint8)
        self.high = Int4Linear(QWeight(4, hi, 16 * w.scale, torch.zeros_like(w.scale), w.group), None)
        self.low = Int4Linear(QWeight(4, lo, w.scale, 8 * w.scale, w.group), bias)
        self.out_features, self.in_features = w.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x.to(COMPUTE_DTYPE)                                       # cast once for both halves
        return self.high(xb) + self.low(xb)


class Q8BlockLinear(nn.Module):
    """y = x @ W^T (+ b) for an int8 W with a scale per 32 weights along K (GGUF Q8_0, kept
    exactly), through the fused C++ op `q8_linear`: x is quantized to int8 per 32-block as
    llama.cpp does, and the dot products are integer. On the bundled model's tied LM head
    (49152 x 576) it takes 1.0 ms at M=1 on 1 thread against 2.1 ms for Int8SplitLinear
    (evals/results/2026-12-01-fused, AMD EPYC). Used when kernels/cpu builds."""

    def __init__(self, w: QWeight, bias: torch.Tensor | None, ops):
        super().__init__()
        assert w.bits == 8 and w.group == 32, (w.bits, w.group)
        self.ops = ops
        self.out_features, self.in_features = w.shape
        self.register_buffer("q", w.q.contiguous())
        self.register_buffer("scales", w.scale.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ops.q8_linear(x.reshape(-1, self.in_features), self.q, self.scales)
        y = y.view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Int8Linear(nn.Module):
    """y = x @ W^T (+ b) with int8 W and one scale per output row; x cast to bf16 for the op."""

    def __init__(self, w: QWeight, bias: torch.Tensor | None):
        super().__init__()
        assert w.bits == 8
        if w.group != w.shape[1]:          # per-block (GGUF Q8_0) -> per-row
            w = quantize_int8(w.dequantize())
        self.out_features, self.in_features = w.shape
        self.register_buffer("weight", w.q.contiguous())
        self.register_buffer("scales", w.scale.view(-1).to(COMPUTE_DTYPE))
        self.register_buffer("bias", None if bias is None else bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int8pack_mm(x.to(COMPUTE_DTYPE), self.weight, self.scales).float()
        return y if self.bias is None else y + self.bias


class DenseLinear(nn.Module):
    """Plain F.linear in the model dtype (the exact fp32 path, and unquantized checkpoints)."""

    def __init__(self, w: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        self.out_features, self.in_features = w.shape
        self.register_buffer("weight", w.to(dtype).contiguous())
        self.register_buffer("bias", None if bias is None else bias.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.to(self.weight.dtype), self.weight, self.bias)


def make_linear(parts: list, bias: torch.Tensor | None, quantization: str | None,
                dtype: torch.dtype) -> nn.Module:
    """One (possibly fused) linear from its row blocks `parts` (tensors and/or QWeights).

    quantization: None = dequantize everything (dense, `dtype`); "auto" = keep what the
    checkpoint stores (QWeights stay quantized, float tensors stay dense); "int4" / "int8" =
    float tensors are quantized to that, QWeights are kept.
    """
    if quantization is not None and can_fuse(parts):
        w = cat_rows(parts)
    elif quantization in ("int4", "int8"):
        w = quantize(torch.cat([p.dequantize() if isinstance(p, QWeight) else p for p in parts]),
                     quantization)
    else:
        w = torch.cat([p.dequantize() if isinstance(p, QWeight) else p.float() for p in parts])
    if isinstance(w, QWeight):
        if w.bits == 4:
            return Int4Linear(w, bias)
        if w.group == 32 and w.shape[1] % 32 == 0:
            from kernels.cpu import load
            ops = load()
            if ops is not None:
                return Q8BlockLinear(w, bias, ops)
        if w.group < w.shape[1] and w.group in (32, 64, 128, 256):
            return Int8SplitLinear(w, bias)
        return Int8Linear(w, bias)
    return DenseLinear(w, bias, dtype)


class QuantEmbedding(nn.Module):
    """Embedding lookup that dequantizes only the rows it returns (exact per-block dequant)."""

    def __init__(self, w: QWeight, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("q", w.q)
        self.register_buffer("scale", w.scale)
        self.register_buffer("zero", w.zero)
        self.bits, self.group, self.dtype = w.bits, w.group, dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = QWeight(self.bits, self.q[ids], self.scale[ids],
                       None if self.zero is None else self.zero[ids], self.group)
        return rows.dequantize().to(self.dtype)
