"""Row-invariant attention: correct against a float64 reference, and every row bit-identical
to the same row computed as a one-token decode step (what makes greedy spec == plain exact)."""
import torch

from specdec.attention import AttentionMetadata, pack_tree_mask
from specdec.row_attention import build_row_batch, row_attention

BS, HKV, G, D = 16, 3, 3, 64


def _meta(segments):
    """segments: list of (q_len, seq_len, block_table, tree ancestor mask [q, q] bool or None)."""
    masks = [m for *_, m in segments if m is not None]
    words = max((pack_tree_mask(m).shape[1] for m in masks), default=0)
    rows = []
    for q_len, _, _, m in segments:
        r = torch.zeros(q_len, max(words, 1), dtype=torch.int32)
        if m is not None:
            p = pack_tree_mask(m)
            r[:, :p.shape[1]] = p
        rows.append(r)
    return AttentionMetadata(
        cu_seqlens_q=torch.tensor([0]), seq_lens=torch.tensor([s for _, s, _, _ in segments]),
        block_tables=torch.zeros(1, 1, dtype=torch.int32), slot_mapping=torch.zeros(0, dtype=torch.int64),
        tree_mask=torch.cat(rows) if masks else None, is_tree=None,
        q_lens_cpu=[q for q, *_ in segments], seq_lens_cpu=[s for _, s, _, _ in segments],
        block_tables_cpu=[t for _, _, t, _ in segments], is_tree_cpu=[m is not None for *_, m in segments])


def _tree_mask(parents):
    n = len(parents)
    m = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while j >= 0:
            m[i, j] = True
            j = parents[j]
    return m


def _reference(q, keys, values, scale):
    """q [Hq, D], keys/values [S, Hkv, D] -> [Hq, D] in float64."""
    k = keys.double().repeat_interleave(G, dim=1).transpose(0, 1)      # (Hq, S, D)
    v = values.double().repeat_interleave(G, dim=1).transpose(0, 1)
    p = torch.softmax((q.double()[:, None, :] @ k.transpose(1, 2))[:, 0] * scale, -1)
    return (p[:, None, :] @ v)[:, 0]


def test_tree_rows_match_reference_and_their_own_decode_step():
    torch.manual_seed(0)
    num_blocks = 40
    k_cache = torch.randn(num_blocks, BS, HKV, D)
    v_cache = torch.randn(num_blocks, BS, HKV, D)
    parents = [-1, 0, 1, 0, 3, 4, 1]               # two branches off the root, one off node 1
    ctx = 37                                       # committed tokens before the root
    table = list(range(5, 5 + (ctx + len(parents) + BS - 1) // BS))
    anc = _tree_mask(parents)
    meta = _meta([(len(parents), ctx + len(parents), table, anc)])
    rows = build_row_batch(meta, [0], BS, torch.device("cpu"))
    q = torch.randn(len(parents), HKV * G, D)
    scale = D ** -0.5
    out = row_attention(q, k_cache, v_cache, rows, scale)
    flat_k, flat_v = k_cache.view(-1, HKV, D), v_cache.view(-1, HKV, D)
    slots = (torch.tensor(table)[:, None] * BS + torch.arange(BS)).flatten()
    for i in range(len(parents)):
        path = torch.nonzero(anc[i]).flatten()
        key_slots = torch.cat([slots[:ctx], slots[ctx + path]])
        ref = _reference(q[i], flat_k[key_slots], flat_v[key_slots], scale)
        assert (out[i].double() - ref).abs().max() < 1e-5
        # the same row as a plain decode step: its keys copied to consecutive slots of a fresh
        # table (as commit does), one query, nothing else in the step
        kc, vc = torch.zeros_like(k_cache), torch.zeros_like(v_cache)
        n = len(key_slots)
        new_table = list(range(20, 20 + (n + BS - 1) // BS))
        dst = (torch.tensor(new_table)[:, None] * BS + torch.arange(BS)).flatten()[:n]
        kc.view(-1, HKV, D)[dst] = flat_k[key_slots]
        vc.view(-1, HKV, D)[dst] = flat_v[key_slots]
        single = build_row_batch(_meta([(1, n, new_table, None)]), [0], BS, torch.device("cpu"))
        alone = row_attention(q[i:i + 1], kc, vc, single, scale)
        assert torch.equal(alone[0], out[i]), f"row {i} differs from its one-token step"


def test_rows_of_a_batch_do_not_depend_on_each_other():
    torch.manual_seed(1)
    k_cache, v_cache = torch.randn(64, BS, HKV, D), torch.randn(64, BS, HKV, D)
    segs = [(1, 5, [0], None), (1, 140, list(range(1, 10)), None), (3, 70, list(range(10, 15)),
            _tree_mask([-1, 0, 1]))]
    meta = _meta(segs)
    q = torch.randn(5, HKV * G, D)
    both = row_attention(q, k_cache, v_cache, build_row_batch(meta, [0, 1, 2], BS, torch.device("cpu")), 0.125)
    first = row_attention(q[:1], k_cache, v_cache, build_row_batch(_meta(segs[:1]), [0], BS,
                                                                   torch.device("cpu")), 0.125)
    assert torch.equal(both[:1], first)


def test_causal_rows_equal_the_per_row_builder():
    """The vectorized builder for causal segments (EAGLE's catch-up) gives every row the same
    visible keys as build_row_batch does row by row."""
    import torch
    from specdec.model_runner import Segment, pack_segments
    from specdec.row_attention import build_row_batch, causal_rows
    segs = [Segment([1, 2, 3], [5, 6, 7], 5, [3, 0, 2], None, [2]),
            Segment([4], [9], 9, [1, 4], None, [0]),
            Segment([5, 6], [14, 15], 14, [7, 5, 6], None, [1])]
    meta = pack_segments(segs, 8, "cpu").meta
    a = build_row_batch(meta, [0, 1, 2], 8, "cpu")
    b = causal_rows(meta, 8, "cpu")
    assert torch.equal(a.lengths, b.lengths) and torch.equal(a.query_index, b.query_index)
    for r in range(len(a.lengths)):
        n = int(a.lengths[r])
        assert torch.equal(a.key_slots[r, :n], b.key_slots[r, :n])
