"""The fused C++ layer ops (kernels/cpu/fused.cpp) against their torch references, their
row-invariance (what keeps greedy speculation == plain exact), and a whole quantized model
on the fused path against the same model on the eager `DecoderLayer` path."""
import pytest
import torch
import torch.nn.functional as F

from kernels.cpu import load
from specdec.attention import TorchAttention
from specdec.model_runner import Segment, pack_segments
from specdec.models.rope import RotaryEmbedding

ops = load()
pytestmark = pytest.mark.skipif(ops is None, reason="fused CPU ops did not build (see kernels/cpu)")

BF16_ULP = 2 ** -7   # relative spacing of bfloat16


def _close_bf16(out, ref):
    """out (bf16) within one bf16 rounding of the float reference."""
    torch.testing.assert_close(out.float(), ref.float(), rtol=BF16_ULP, atol=1e-6)


def test_rms_norm_and_residual_add_match_torch():
    torch.manual_seed(0)
    x, y, w = torch.randn(5, 96), torch.randn(5, 96).bfloat16(), torch.rand(96) + 0.5
    _close_bf16(ops.rms_norm_bf16(x, w, 1e-5), F.rms_norm(x, (96,), w, 1e-5))
    x2 = x.clone()
    h = ops.add_rms_norm_bf16(x2, y, w, 1e-5)
    assert torch.equal(x2, x + y.float())              # the residual add is exact
    _close_bf16(h, F.rms_norm(x + y.float(), (96,), w, 1e-5))
    x3 = x.clone()
    ops.add_bf16_(x3, y)
    assert torch.equal(x3, x + y.float())


def test_silu_mul_matches_torch():
    torch.manual_seed(0)
    gu = (3 * torch.randn(4, 2 * 48)).bfloat16()
    g, u = gu.float().split(48, dim=-1)
    _close_bf16(ops.silu_mul_bf16(gu), F.silu(g) * u)


def test_rope_store_rotates_q_and_k_and_writes_the_cache():
    torch.manual_seed(0)
    Hq, Hkv, D, T = 6, 2, 16, 3
    rope = RotaryEmbedding(D, 64, 10000.0, None, torch.float32, "cpu")
    qkv = torch.randn(T, (Hq + 2 * Hkv) * D).bfloat16()
    positions = torch.tensor([5, 9, 30])
    slots = torch.tensor([7, -1, 2])                   # the middle token is not stored
    kc, vc = torch.zeros(4, 4, Hkv, D), torch.zeros(4, 4, Hkv, D)
    q = ops.rope_store(qkv, rope.cos, rope.sin, positions, kc, vc, slots, Hq, Hkv)
    x = qkv.float().view(T, Hq + 2 * Hkv, D)
    ref = RotaryEmbedding.apply(x[:, :Hq + Hkv], rope.lookup(positions))
    torch.testing.assert_close(q, ref[:, :Hq], rtol=1e-6, atol=1e-6)
    flat_k, flat_v = kc.view(-1, Hkv, D), vc.view(-1, Hkv, D)
    for t, s in [(0, 7), (2, 2)]:
        torch.testing.assert_close(flat_k[s], ref[t, Hq:], rtol=1e-6, atol=1e-6)
        assert torch.equal(flat_v[s], x[t, Hq + Hkv:])
    assert flat_k.abs().sum() == flat_k[[7, 2]].abs().sum()   # nothing else written


def _attention_case(R=5, Hkv=3, G=3, D=64, slots_total=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    kc = torch.randn(slots_total // 16, 16, Hkv, D, generator=g)
    vc = torch.randn(slots_total // 16, 16, Hkv, D, generator=g)
    q = torch.randn(R, Hkv * G, D, generator=g)
    lengths = torch.tensor([1, 17, 64, 130, 9][:R])
    S = 192
    key_slots = torch.zeros(R, S, dtype=torch.int64)
    for r in range(R):
        key_slots[r, :lengths[r]] = torch.randperm(slots_total // 16 * 16, generator=g)[:lengths[r]]
    return q, kc, vc, key_slots, lengths


def test_row_attention_matches_a_float64_softmax():
    q, kc, vc, key_slots, lengths = _attention_case()
    out = ops.row_attention(q, kc, vc, key_slots, lengths, 0.125)
    Hkv, D = kc.shape[2], kc.shape[3]
    G = q.shape[1] // Hkv
    for r in range(q.shape[0]):
        s = key_slots[r, :lengths[r]]
        k = kc.view(-1, Hkv, D)[s].double().repeat_interleave(G, 1).transpose(0, 1)   # (Hq, n, D)
        v = vc.view(-1, Hkv, D)[s].double().repeat_interleave(G, 1).transpose(0, 1)
        p = torch.softmax(torch.einsum("hd,hnd->hn", q[r].double(), k) * 0.125, -1)
        ref = torch.einsum("hn,hnd->hd", p, v).reshape(-1)
        _close_bf16(out[r], ref)


def test_row_attention_rows_do_not_depend_on_the_batch_or_threads():
    q, kc, vc, key_slots, lengths = _attention_case()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        together = ops.row_attention(q, kc, vc, key_slots, lengths, 0.125)
        torch.set_num_threads(1)
        for r in range(q.shape[0]):
            # alone, and with the key buffer padded differently: the same bits
            alone = ops.row_attention(q[r:r + 1], kc, vc, key_slots[r:r + 1, :lengths[r] + 3],
                                      lengths[r:r + 1], 0.125)
            assert torch.equal(alone[0], together[r])
    finally:
        torch.set_num_threads(threads)


def test_row_attention_rejects_bad_slots():
    q, kc, vc, key_slots, lengths = _attention_case()
    key_slots[1, 0] = 10 ** 6
    with pytest.raises(RuntimeError, match="key slot out of range"):
        ops.row_attention(q, kc, vc, key_slots, lengths, 0.125)


@pytest.fixture(scope="module")
def tiny_int4(tiny_model_dir):
    from specdec import LLM
    llm = LLM(model=tiny_model_dir, quantization="int4", num_kv_blocks=64)
    model = llm.engine.model
    assert model.fused is not None, "the int4 CPU model should take the fused path"
    return model


def _run(model, fused, segments, kv, block_size):
    keep = model.fused
    model.fused = keep if fused else None
    try:
        inputs = pack_segments(segments, block_size, "cpu")
        with torch.inference_mode():
            return model(inputs.input_ids, inputs.positions, kv, inputs.meta, TorchAttention())
    finally:
        model.fused = keep


def test_fused_model_matches_the_eager_layers(tiny_int4):
    """Prefill (layer by layer, SDPA for the chunk), then a decode token and a draft tree
    (all layers in one forward_rows call): hidden states agree with the eager path."""
    model = tiny_int4
    cfg, bs = model.cfg, 16
    kv_shape = (cfg.num_layers, 2, 8, bs, cfg.num_kv_heads, cfg.head_dim)
    kv = {True: torch.zeros(kv_shape), False: torch.zeros(kv_shape)}
    table = [3, 1, 6]
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 1000, (21,), generator=g).tolist()
    from specdec.attention import pack_tree_mask
    tree = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.bool)
    steps = [
        [Segment(prompt[:20], list(range(20)), 0, table, None, [19])],
        [Segment(prompt[20:21], [20], 20, table, None, [0])],
        [Segment([5, 6, 7, 8], [21, 22, 22, 23], 21, table, pack_tree_mask(tree), [0, 1, 2, 3])],
    ]
    for segs in steps:
        fused = _run(model, True, segs, kv[True], bs)
        eager = _run(model, False, segs, kv[False], bs)
        scale = eager.abs().max()
        assert (fused - eager).abs().max() <= 0.02 * scale, (fused - eager).abs().max()
        torch.testing.assert_close(kv[True], kv[False], rtol=0.02, atol=0.02 * kv[False].abs().max().item())


def test_generated_tokens_recomputed_as_a_chain_match_their_decode_steps(tiny_int4):
    """After a preemption the generated tokens are recomputed as one chain-shaped segment
    (model_runner.causal_segment); each row must equal the one-token step that first
    produced it, bit for bit, or recomputed requests would drift from their first run."""
    from specdec.attention import pack_tree_mask
    from specdec.model_runner import causal_segment
    from specdec.request import Request
    from specdec.sampling_params import SamplingParams
    model = tiny_int4
    cfg, bs = model.cfg, 16
    table = [2, 5, 7]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 1000, (30,), generator=g).tolist()
    P = 22                                             # prompt; 8 generated tokens follow

    def fresh_kv():
        kv = torch.zeros(cfg.num_layers, 2, 8, bs, cfg.num_kv_heads, cfg.head_dim)
        _run(model, True, [Segment(ids[:P], list(range(P)), 0, table, None, [P - 1])], kv, bs)
        return kv

    kv = fresh_kv()
    one_by_one = torch.cat([_run(model, True, [Segment([ids[p]], [p], p, table, None, [0])], kv, bs)
                            for p in range(P, len(ids))])
    req = Request("r", ids[:P], SamplingParams(), [2])
    req.token_ids = list(ids)
    req.block_table = table
    seg = causal_segment(req, P, len(ids) - P, True)
    assert seg.tree_mask is not None                   # generated tokens take the row path
    chained = _run(model, True, [seg], fresh_kv(), bs)      # hidden states of every row
    assert torch.equal(chained, one_by_one)
    # (the same tokens as a plain causal prefill chunk would go through SDPA instead)
    assert torch.equal(seg.tree_mask, pack_tree_mask(torch.ones(8, 8, dtype=torch.bool).tril()))


def test_feature_capture_on_an_all_rows_step_stays_one_call_and_changes_nothing(tiny_int4):
    """EAGLE's feature capture on a decode / tree step runs in the same one C++ call as a plain
    step (forward_rows): the hidden states equal the no-capture call's bit for bit, and the
    captured residuals agree with the eager layers'."""
    from specdec.attention import pack_tree_mask
    model = tiny_int4
    cfg, bs = model.cfg, 16
    kv_shape = (cfg.num_layers, 2, 8, bs, cfg.num_kv_heads, cfg.head_dim)
    table = [3, 1, 6]
    prompt = torch.randint(0, 1000, (20,), generator=torch.Generator().manual_seed(2)).tolist()
    tree = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    step = [Segment([5, 6, 7], [20, 21, 21], 20, table, pack_tree_mask(tree), [0, 1, 2])]
    out = {}
    for name, fused, capture in (("plain", True, ()), ("capture", True, (0, 1)), ("eager", False, (0, 1))):
        kv = torch.zeros(kv_shape)
        _run(model, True, [Segment(prompt, list(range(20)), 0, table, None, [19])], kv, bs)
        keep, ops = model.fused, model.fused.ops
        model.fused = keep if fused else None
        calls = []

        class Spy:       # the fused ops, counting forward_rows calls
            def __getattr__(self, k):
                if k == "forward_rows":
                    calls.append(k)
                return getattr(ops, k)
        keep.ops = Spy()
        try:
            inputs = pack_segments(step, bs, "cpu")
            with torch.inference_mode():
                out[name] = model(inputs.input_ids, inputs.positions, kv, inputs.meta, TorchAttention(),
                                  capture_layers=capture)
        finally:
            keep.ops = ops
            model.fused = keep
        assert calls == (["forward_rows"] if fused else [])
    hidden, feats = out["capture"]
    assert torch.equal(hidden, out["plain"])
    eager_feats = out["eager"][1]
    assert feats.shape == eager_feats.shape == (3, 2 * cfg.hidden_size)
    assert (feats - eager_feats).abs().max() <= 0.02 * eager_feats.abs().max()
