"""Weight-only quantized linears: exact GGUF block mapping, accuracy, and row invariance."""
import mmap

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize as gguf_quantize

from specdec.loader.gguf_file import QWEIGHT_TYPES, quantized_tensor, read_header
from specdec.models.quant import (DenseLinear, Int4Linear, Int8Linear, Q8BlockLinear, QuantEmbedding, QWeight,
                                  from_gguf_blocks, make_linear, quantize_int4, quantize_int8,
                                  quantize_q8_0)


@pytest.mark.parametrize("kind", QWEIGHT_TYPES)
def test_gguf_blocks_map_exactly_onto_qweight(kind):
    """QWeight.dequantize reproduces gguf's own dequantization of the same blocks."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 128)).astype(np.float32) * 0.05
    qtype = GGMLQuantizationType[kind]
    raw = gguf_quantize(w, qtype)                        # [64, row_bytes] uint8
    ref = dequantize(raw, qtype)
    got = from_gguf_blocks(raw, kind, (64, 128)).dequantize().numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_bundled_file_tensors_load_as_qweights(bundled_path):
    with open(bundled_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        _, infos = read_header(blob, bundled_path)
        for name in ("blk.0.attn_q.weight", "blk.3.ffn_down.weight", "token_embd.weight"):
            info = infos[name]
            qw = quantized_tensor(blob, info)
            assert isinstance(qw, QWeight) and qw.shape == info.shape
            from specdec.loader.gguf_file import dequantize_tensor
            torch.testing.assert_close(qw.dequantize(), dequantize_tensor(blob, info), rtol=0, atol=1e-6)


def _weights(n=960, k=576, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 0.05


def _q8_block(w):
    from kernels.cpu import load
    ops = load()
    if ops is None:
        pytest.skip("fused CPU ops did not build (see kernels/cpu)")
    return Q8BlockLinear(quantize_q8_0(w), None, ops)


MAKERS = [(lambda w: Int4Linear(quantize_int4(w), None), quantize_int4),
          (lambda w: Int8Linear(quantize_int8(w), None), quantize_int8),
          (_q8_block, quantize_q8_0)]


@pytest.mark.parametrize("make,quant", MAKERS, ids=["int4", "int8", "q8_0"])
def test_quantized_linear_is_close_to_its_dequantized_weight(make, quant):
    w = _weights()
    lin = make(w)
    x = torch.randn(5, w.shape[1])
    qw = quant(w)
    ref = x @ qw.dequantize().t()
    got = lin(x)
    assert got.dtype == torch.float32
    # bf16 (int4, int8) or int8-per-block (q8_0) activations: ~2-3 significant digits
    assert (got - ref).abs().max() < 0.02 * ref.abs().max()


@pytest.mark.parametrize("make,quant", MAKERS, ids=["int4", "int8", "q8_0"])
def test_quantized_linear_rows_do_not_depend_on_the_batch(make, quant):
    """Row i of an M-row matmul equals row i computed alone, bit for bit, for M = 1..33:
    what lets a verify step over K+1 tokens reproduce K+1 one-token steps exactly."""
    lin = make(_weights())
    x = torch.randn(33, 576)
    alone = torch.cat([lin(x[i:i + 1]) for i in range(33)])
    for m in (2, 3, 5, 8, 16, 33):
        assert torch.equal(lin(x[:m]), alone[:m]), f"M={m}"


def test_q8_0_kernel_paths_agree_bit_for_bit():
    """The AVX512-VNNI path of q8_linear (chosen where the CPU and OS enable it) produces the
    same int32 lanes and float steps as the AVX2 path: identical outputs, at any M."""
    from kernels.cpu import load
    ops = load()
    if ops is None:
        pytest.skip("fused CPU ops did not build (see kernels/cpu)")
    qw = quantize_q8_0(_weights(300, 576))
    x = torch.randn(13, 576) * 3
    portable = ops.q8_linear(x, qw.q, qw.scale, 0)
    torch.testing.assert_close(portable, x @ qw.dequantize().t(), rtol=0.02, atol=0.02 * portable.abs().max().item())
    if ops.cpu_has_vnni():
        for m in (1, 3, 4, 5, 13):
            assert torch.equal(ops.q8_linear(x[:m], qw.q, qw.scale, 1), portable[:m]), f"M={m}"
        assert torch.equal(ops.q8_linear(x, qw.q, qw.scale), portable)     # auto picks VNNI
    else:
        with pytest.raises(RuntimeError, match="VNNI"):
            ops.q8_linear(x, qw.q, qw.scale, 1)


def test_make_linear_modes():
    w = _weights(128, 64)
    parts = [w[:64], w[64:]]
    assert isinstance(make_linear(parts, None, None, torch.float32), DenseLinear)
    assert isinstance(make_linear(parts, None, "auto", torch.float32), DenseLinear)
    assert isinstance(make_linear(parts, None, "int4", torch.float32), Int4Linear)
    assert isinstance(make_linear(parts, None, "int8", torch.float32), Int8Linear)
    q = [quantize_int4(p) for p in parts]
    fused = make_linear(q, None, "auto", torch.float32)        # QWeights fuse without requantizing
    assert isinstance(fused, Int4Linear) and fused.out_features == 128
    dense = make_linear(q, None, None, torch.float32)          # None dequantizes
    torch.testing.assert_close(dense.weight, torch.cat([p.dequantize() for p in q]))


def test_quant_embedding_dequantizes_rows_exactly():
    w = _weights(100, 64)
    qw = quantize_int8(w)
    emb = QuantEmbedding(QWeight(8, qw.q, qw.scale, None, 64), torch.float32)
    ids = torch.tensor([3, 99, 3, 0])
    torch.testing.assert_close(emb(ids), qw.dequantize()[ids], rtol=0, atol=0)


def test_q8_0_split_into_two_int4_halves_is_exact_in_the_weights():
    """Int8SplitLinear keeps GGUF Q8_0 per-block scales: its product equals x @ W^T of the exact
    dequantized weight up to bf16 rounding of x and of each half's output, and is row-invariant."""
    from gguf.quants import quantize as gq
    from specdec.models.quant import Int8SplitLinear
    w = (torch.randn(256, 128) * 0.05).numpy()
    qw = from_gguf_blocks(gq(w, GGMLQuantizationType.Q8_0), "Q8_0", (256, 128))
    from kernels.cpu import load
    # the fused q8 op where kernels/cpu built; the split (eager fallback) otherwise
    picked = make_linear([qw], None, "auto", torch.float32)
    assert isinstance(picked, Q8BlockLinear if load() is not None else Int8SplitLinear)
    lin = Int8SplitLinear(qw, None)
    x = torch.randn(7, 128).to(torch.bfloat16).float()        # bf16-representable input
    ref = x @ qw.dequantize().t()
    assert (lin(x) - ref).abs().max() < 0.01 * ref.abs().max()
    alone = torch.cat([lin(x[i:i + 1]) for i in range(7)])
    assert torch.equal(lin(x), alone)
