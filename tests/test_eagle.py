"""EAGLE draft head and proposer: training and drafting compute the same thing, trees are
connected and within budget, the target's feature capture leaves the plain path unchanged."""
import pytest
import torch

from drafts.eagle import EagleProposer, EagleState, _select, _Tree
from drafts.eagle_head import EagleConfig, EagleHead, load_head, save_head
from drafts.train.ttt import Pack, make_packs, ttt_loss
from drafts.train.vocab import build_vocab, target_to_draft
from specdec.attention import TorchAttention
from specdec.draft_tree import NO_NODE, DraftTree
from specdec.models.rope import RotaryEmbedding
from specdec.request import Request
from specdec.sampling_params import SamplingParams

V, H, BS = 100, 64, 8


def tiny_head(seed=0, aux=(0, 1)) -> EagleHead:
    torch.manual_seed(seed)
    cfg = EagleConfig(hidden_size=H, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=128,
                      rms_norm_eps=1e-6, rope_theta=10000.0, aux_layers=aux, draft_vocab_size=V,
                      target_vocab_size=V)
    head = EagleHead(cfg)
    with torch.no_grad():   # sharp, varied logits so argmax chains are not accidental
        head.lm_head.normal_(0, 3.0)
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return head.requires_grad_(False)


def tiny_proposer(head, depth: int = 3, topk: int = 2):
    """An EagleProposer over `head` with a random target embedding and a one-layer pool:
    (proposer, embedding, rope)."""
    embed = torch.randn(V, H)
    rope = RotaryEmbedding(16, 256, 10000.0, None, torch.float32, "cpu")
    kv = torch.zeros(1, 2, 16, BS, 2, 16)
    prop = EagleProposer(head, lambda ids: embed[ids], rope, kv, BS, TorchAttention(), "cpu",
                         depth=depth, topk=topk)
    return prop, embed, rope


@pytest.mark.parametrize("depth", [1, 3, 4])
def test_ttt_step_j_equals_drafting_at_depth_j_plus_1(depth):
    """The draft chain the proposer grows (paged pool, tree masks, catch-up) is what the TTT
    loss scores: step j at row n-2+j has the proposer's depth-(j+1) token as its argmax."""
    head = tiny_head()
    prop, embed, rope = tiny_proposer(head, depth=depth, topk=1)
    n = 21                                              # tokens 0..n-1, the last one is the root
    tokens = torch.randint(0, V, (n,)).tolist()
    feats = torch.randn(n + depth, 2 * H)
    req = Request("r", tokens, SamplingParams(), (V + 1,))
    req.block_table = list(range(8))
    req.num_computed_tokens = n - 1
    prop.observe(req, 0, feats[:n - 1])
    seen = []
    logits_fn = head.logits
    head.logits = lambda a: seen.append(logits_fn(a)) or seen[-1]     # record every draft row's logits
    tree = prop.propose([req], [depth])[0]
    drafted = [x[0] for x in seen]
    assert tree.num_nodes == depth + 1 and tree.parents == [NO_NODE] + list(range(depth))
    chain = tree.token_ids[1:]
    seq = torch.tensor(tokens + chain)
    for j in range(depth):
        row = n - 2 + j
        T = len(seq) - 1
        labels = torch.full((T,), -1)
        labels[row] = chain[j]                          # d2t = 0: draft id == target id
        pack = Pack(feats[:T], seq[1:], labels, torch.arange(T), torch.zeros(T, dtype=torch.int64))
        seen.clear()
        _, stats = ttt_loss(head, embed, pack, rope, steps=depth)
        assert stats[j] == (1, 1), f"step {j}: training and drafting disagree"
        assert torch.allclose(seen[j][0], drafted[j], atol=1e-4), f"step {j}: logits differ"


def test_proposer_catches_up_on_features_across_steps():
    prop, _, _ = tiny_proposer(tiny_head())
    req = Request("r", list(range(10)), SamplingParams(), (V + 1,))
    req.block_table = list(range(8))
    prop.observe(req, 0, torch.randn(4, 2 * H))       # prefill chunk 1
    prop.observe(req, 4, torch.randn(5, 2 * H))       # prefill chunk 2: positions 0..8
    req.num_computed_tokens = 9
    tree = prop.propose([req], [6])[0]
    assert 1 < tree.num_nodes <= 7 and req.spec.num_computed == 9
    # next step: root + 2 accepted committed, bonus appended
    req.token_ids += [5, 6, 7]
    prop.observe(req, 9, torch.randn(3, 2 * H))
    req.num_computed_tokens = 12
    tree = prop.propose([req], [6])[0]
    assert tree.num_nodes > 1 and req.spec.num_computed == 12 and req.spec.feat_start == 12
    # a request without features yet is not drafted
    fresh = Request("f", [1, 2, 3], SamplingParams(), (V + 1,))
    fresh.block_table = [9]
    assert prop.propose([fresh], [6])[0].num_nodes == 1


def test_dynamic_tree_keeps_the_best_connected_nodes():
    # root -> a(-0.1) -> c(-0.2); root -> b(-2.0); a -> d(-3.0)
    t = _Tree(None, 3, 2, 2, [0, 11, 12, 13, 14], [NO_NODE, 0, 0, 1, 1], [0.0, -0.1, -2.0, -0.2, -3.0],
              [0, 1, 1, 2, 2])
    tree = _select(t)
    assert tree.token_ids == [0, 11, 13] and tree.parents == [NO_NODE, 0, 1]
    t.max_nodes = 3
    tree = _select(t)
    assert sorted(tree.token_ids) == [0, 11, 12, 13]
    for i in range(1, tree.num_nodes):
        assert tree.parents[i] < i


def test_vocab_maps_draft_ids_back_to_target_ids():
    toks = [torch.tensor([5, 5, 5, 9, 9, 2, 7]), torch.tensor([9, 5, 3])]
    d2t, coverage = build_vocab(toks, 12, 3, always=(11,))
    kept = torch.arange(3) + d2t
    assert kept.tolist() == [5, 9, 11]
    assert coverage == pytest.approx(7 / 10)
    t2d = target_to_draft(d2t, 12)
    assert t2d[9] == 1 and t2d[2] == -1
    with pytest.raises(ValueError, match="draft_vocab_size"):
        build_vocab(toks, 12, 0)


def test_packs_label_only_answer_tokens():
    t2d = torch.arange(V)
    tok = torch.arange(10, 20)
    packs = make_packs([tok, tok], [6, 6], [torch.randn(10, 2 * H)] * 2, t2d, max_rows=12)
    assert len(packs) == 2                               # 9 rows each, 18 > 12: two packs
    p = packs[0]
    assert p.next_tokens.tolist() == list(range(11, 20))
    # row r is labelled with token r + 2 if that is an answer token (index >= 6)
    assert p.labels.tolist() == [-1, -1, -1, -1, 16, 17, 18, 19, -1]
    assert p.run.tolist() == [0, 0, 0, 0, 0, 1, 2, 3, 4]


def test_offpolicy_packs_label_the_targets_argmax_and_count_agreeing_runs():
    t2d = torch.arange(V)
    tok = torch.tensor([10, 11, 12, 13, 14, 15, 16])
    best = torch.tensor([50, 51, 13, 14, 60, 16, 70])    # argmax after each token
    p = make_packs([tok], [3], [torch.randn(7, 2 * H)], t2d, max_rows=32, argmax=[best])[0]
    # row p is labelled with the argmax after token p+1 where token p+2 is in the answer
    assert p.labels.tolist() == [-1, 13, 14, 60, 16, 70]
    # tokens 3, 4 agree with the argmax, 5 does not, 6 does
    assert p.run.tolist() == [0, 0, 1, 2, 0, 1]

def test_head_files_round_trip(tmp_path):
    head = tiny_head()
    head.d2t.copy_(torch.arange(V) % 3)
    save_head(head, tmp_path)
    back = load_head(tmp_path)
    assert back.cfg == head.cfg
    assert torch.equal(back.d2t, head.d2t)
    assert torch.allclose(back.fc.weight, head.fc.weight, atol=1e-2)    # bf16 on disk
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json"):
        load_head(tmp_path)


def test_feature_capture_leaves_logits_unchanged(tiny_llm):
    from specdec.model_runner import causal_segment, pack_segments
    eng = tiny_llm.engine
    req = Request("c", list(range(3, 40)), SamplingParams(), eng.eos_token_ids)
    assert eng.block_manager.allocate(req, req.num_tokens)
    try:
        inputs = pack_segments([causal_segment(req, 0, req.num_tokens, True)], eng.config.block_size, "cpu")
        plain = eng.runner.forward(inputs)
        logits, feats = eng.runner.forward(inputs, (1, 0))
    finally:
        eng.block_manager.free(req)
    assert torch.equal(plain, logits)
    assert feats.shape == (req.num_tokens, 2 * eng.model_config.hidden_size)
    # the residual entering layer 0 is the token embedding
    assert torch.allclose(feats[:, H:], eng.model.embed_tokens(torch.tensor(req.token_ids)).float())


def test_eagle_config_errors(tmp_path):
    from specdec import LLM
    with pytest.raises(ValueError, match="config.json"):
        LLM(speculative_config={"method": "eagle", "model": str(tmp_path)})


@pytest.fixture(scope="module")
def tiny_head_dir(tmp_path_factory, tiny_llm):
    """A random head shaped for the tiny test model (the engine plumbing, not acceptance)."""
    mc = tiny_llm.engine.model_config
    torch.manual_seed(1)
    head = EagleHead(EagleConfig.for_target(mc, (0, 1), 512))
    head.d2t.copy_(torch.arange(512) * 3)                # draft id i -> target id 4i
    path = tmp_path_factory.mktemp("tiny-eagle")
    save_head(head, path)
    return str(path)


def test_engine_eagle_greedy_equals_plain_and_frees_blocks(tiny_model_dir, tiny_llm, tiny_head_dir):
    from specdec import LLM
    llm = LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=256, max_num_batched_tokens=24,
              speculative_config={"method": "eagle", "model": tiny_head_dir, "num_speculative_tokens": 3,
                                  "adaptive": False})
    params = SamplingParams(temperature=0.0, max_tokens=20)
    prompts = [list(range(5, 45)), list(range(7, 19)), list(range(5, 45)) + [3, 4]]  # 3rd: prefix-cache hit
    for p in prompts:   # one request at a time (prefill chunking otherwise depends on the batch)
        want = tiny_llm.generate(prompt_token_ids=[p], sampling_params=params)[0].outputs[0].token_ids
        got = llm.generate(prompt_token_ids=[p], sampling_params=params)[0].outputs[0].token_ids
        assert got == want
    m = llm.engine.spec_metrics
    assert m.num_drafted > 0 and m.num_forwards > 0
    # several requests at once, sampled: runs, finishes, frees everything
    outs = llm.generate(prompt_token_ids=prompts, sampling_params=SamplingParams(temperature=1.0, max_tokens=16,
                                                                                 seed=3))
    assert all(len(o.outputs[0].token_ids) == 16 for o in outs)
    bm = llm.engine.block_manager
    assert bm.num_free_blocks == bm.num_blocks


def test_eagle_head_for_another_target_is_refused(tiny_head_dir):
    from specdec import LLM
    with pytest.raises(ValueError, match="another target"):
        LLM(speculative_config={"method": "eagle", "model": tiny_head_dir})


def test_hybrid_uses_ngram_on_a_long_match_and_eagle_otherwise(tiny_model_dir, tiny_llm, tiny_head_dir):
    from specdec import LLM
    llm = LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=256,
              speculative_config={"method": "hybrid", "model": tiny_head_dir, "num_speculative_tokens": 3,
                                  "adaptive": False})
    params = SamplingParams(temperature=0.0, max_tokens=16)
    for p in [list(range(5, 25)) * 3, list(range(100, 140))]:   # repeats / no repeats
        want = tiny_llm.generate(prompt_token_ids=[p], sampling_params=params)[0].outputs[0].token_ids
        assert llm.generate(prompt_token_ids=[p], sampling_params=params)[0].outputs[0].token_ids == want
    assert llm.engine.proposer.num_eagle > 0 and llm.engine.spec_metrics.num_drafted > 0
    # a prompt whose earlier "2 3 9 9" is followed by more 9s (the tiny model repeats its last
    # token): the n-gram chain and the head's tree are verified as one tree, still exact
    p = [1, 2, 3] + [9] * 12 + [50, 51, 1, 2, 3, 9]
    want = tiny_llm.generate(prompt_token_ids=[p], sampling_params=params)[0].outputs[0].token_ids
    assert llm.generate(prompt_token_ids=[p], sampling_params=params)[0].outputs[0].token_ids == want
    assert llm.engine.proposer.num_merged > 0


def test_hybrid_chooses_per_request():
    from drafts.hybrid import HybridProposer
    eagle, _, _ = tiny_proposer(tiny_head())
    hybrid = HybridProposer(eagle, ngram_max=4, ngram_min=3)
    repeating = Request("a", [1, 2, 3, 4, 5, 6, 7, 1, 2, 3], SamplingParams(), (V + 1,))
    fresh = Request("b", [11, 12, 13, 14, 15, 16, 17, 18, 19, 20], SamplingParams(), (V + 1,))
    for k, r in enumerate((repeating, fresh)):
        r.block_table = [2 * k, 2 * k + 1]
        r.num_computed_tokens = 9
        hybrid.observe(r, 0, torch.randn(9, 2 * H))
    t_rep, t_fresh = hybrid.propose([repeating, fresh], [5, 5])     # < 2 x depth: one or the other
    assert t_rep.token_ids == [3, 4, 5, 6, 7, 1]             # the continuation after "1 2 3"
    assert t_fresh.num_nodes > 1 and hybrid.num_ngram == 1 and hybrid.num_eagle == 1
    assert fresh.spec.num_computed == 9 and repeating.spec.num_computed == 0   # only eagle caught up
    # a budget of >= 2 x depth takes both: the chain (at most half) merged into the head's tree
    merged = hybrid.propose([repeating], [8])[0]
    assert hybrid.num_merged == 1 and merged.num_draft_tokens <= 8
    chain_end = max(range(merged.num_nodes), key=lambda n: merged.depths[n])
    assert [merged.token_ids[n] for n in merged.path_to(chain_end)] == [3, 4, 5, 6, 7]
    head_alone = hybrid.eagle.propose([repeating], [4])[0]
    assert merged.token_ids[:head_alone.num_nodes] == head_alone.token_ids   # the head's nodes first


def test_a_path_merges_into_a_tree_sharing_its_prefix():
    tree = DraftTree([1, 2, 3, 4], [NO_NODE, 0, 0, 1])       # 1 -> {2 -> 4, 3}
    merged = tree.with_path([2, 4, 7, 8])
    assert merged.token_ids == [1, 2, 3, 4, 7, 8] and merged.parents == [NO_NODE, 0, 0, 1, 3, 4]
    assert tree.with_path([5]).parents == [NO_NODE, 0, 0, 1, 0]
    assert tree.with_path([2, 4]).token_ids == tree.token_ids


def test_shards_are_written_atomically_and_a_rerun_resumes(tmp_path):
    """drafts.train.collect.write_shards: existing shards are kept, only missing ones are made."""
    import torch
    from drafts.train.collect import shard_path, write_shards
    made = []

    def make(i):
        made.append(i)
        return {"tokens": [torch.arange(i + 1)]}

    assert write_shards(tmp_path, 3, 10.0, "t", make) == 3 and made == [0, 1, 2]
    shard_path(tmp_path, 1).unlink()                      # as if interrupted before shard 1 landed
    made.clear()
    assert write_shards(tmp_path, 3, 10.0, "t", make) == 3 and made == [1]
    assert torch.equal(torch.load(shard_path(tmp_path, 2))["tokens"][0], torch.arange(3))
    assert not list(tmp_path.glob("*.tmp"))
    made.clear()
    assert write_shards(tmp_path, 5, -1.0, "t", make) == 3 and made == []  # deadline passed: stop


def test_a_node_budget_fits_its_reserved_slots():
    """With a budget of N nodes (what the cost-aware policy asks for) the proposer returns N
    nodes, forwards fewer than N (each forwarded node's draft K/V takes one of the request's N
    reserved lookahead slots), and only expands what it can choose."""
    head = tiny_head(seed=5)
    for budget, depth, topk in ((12, 3, 4), (3, 3, 4), (2, 3, 4), (1, 3, 4), (5, 4, 2)):
        prop, _, _ = tiny_proposer(head, depth=depth, topk=topk)
        req = Request("r", list(range(30)), SamplingParams(), (V + 1,))
        req.block_table = list(range(8))
        req.num_computed_tokens = 29
        prop.observe(req, 0, torch.randn(29, 2 * H, generator=torch.Generator().manual_seed(1)))
        forwarded = []
        rows_fn = head.forward_rows
        head.forward_rows = lambda *a, **k: forwarded.append(a[3].tolist()) or rows_fn(*a, **k)
        tree = prop.propose([req], [budget])[0]
        del head.forward_rows
        slots = [s for call in forwarded for s in call]
        assert tree.num_nodes == budget + 1 and max(tree.depths) <= min(depth, budget)
        assert len(slots) < budget or budget == 1 and not slots
        assert slots == list(range(29, 29 + len(slots)))       # block_table = identity, BS = 8


def test_engine_gives_eagle_a_node_budget(tiny_model_dir, tiny_head_dir):
    """Adaptive: the policy's unit is one node (a verify of depth + 1 tokens at most), not a
    tree row of `tree_width` nodes; "adaptive": False drafts the whole depth x width tree."""
    from specdec import LLM
    for adaptive, want in ((True, 3), (False, 12)):
        llm = LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=64,
                  speculative_config={"method": "eagle", "model": tiny_head_dir, "num_speculative_tokens": 3,
                                      "tree_width": 4, "adaptive": adaptive})
        eng = llm.engine
        assert eng.policy.width == 1 and eng.policy.max_depth == 3
        req = Request("r", list(range(5, 20)), SamplingParams(), (V + 1,))
        req.accept_ema = 0.99
        if adaptive:     # a flat cost: the deepest chain pays
            eng.step_cost.sizes.clear()
            for n in range(1, 40):
                eng.step_cost.observe(n, 0.01)
        assert eng._lookahead(req) == want


def test_hybrid_without_a_head_for_the_model_drafts_with_ngram(tiny_model_dir, tiny_llm):
    """No head is shipped for this (tiny) target: "hybrid" keeps speculating with n-grams,
    "eagle" refuses to start."""
    from drafts.ngram import NgramProposer
    from specdec import LLM
    llm = LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=128,
              speculative_config={"method": "hybrid", "adaptive": False})
    assert isinstance(llm.engine.proposer, NgramProposer) and llm.engine.capture_layers == ()
    p = list(range(5, 25)) * 3
    params = SamplingParams(temperature=0.0, max_tokens=12)
    want = tiny_llm.generate(prompt_token_ids=[p], sampling_params=params)[0].outputs[0].token_ids
    assert llm.generate(prompt_token_ids=[p], sampling_params=params)[0].outputs[0].token_ids == want
    with pytest.raises(ValueError, match="no EAGLE head"):
        LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=128, speculative_config={"method": "eagle"})
