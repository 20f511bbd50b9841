"""500 random mixed requests (speculative and plain, sampled and greedy, aborted mid-way)
through a small pool: everything finishes or is aborted, and no block is leaked."""
import random

from specdec import LLM, SamplingParams


def test_500_random_mixed_requests_leak_no_block(tiny_model_dir):
    llm = LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=48, max_num_seqs=32,
              max_num_batched_tokens=256,
              speculative_config={"method": "draft_model", "num_speculative_tokens": 3,
                                  "draft_num_layers": 1, "tree": {"width": 2, "topk": 2}})
    ngram = LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=48, max_num_seqs=32,
                max_num_batched_tokens=256,
                speculative_config={"method": "ngram", "num_speculative_tokens": 3, "tree_width": 2})
    rng = random.Random(0)
    for engine in (llm.engine, ngram.engine):
        bm = engine.block_manager
        live: list[str] = []
        finished = aborted = 0
        for i in range(250):
            prompt = [rng.randrange(3, 2000) for _ in range(rng.randint(1, 30))]
            prompt += prompt[: rng.randint(0, len(prompt))]           # repeats give n-gram matches
            params = SamplingParams(
                temperature=rng.choice([0.0, 0.0, 0.8]), top_k=rng.choice([-1, 20]),
                max_tokens=rng.randint(1, 12), seed=rng.choice([None, i]),
                num_speculative_tokens=rng.choice([None, None, 0, 1]), ignore_eos=True)
            live.append(engine.add_request(f"r{i}", prompt, params))
            for out in engine.step():
                if out.finished:
                    finished += 1
                    live.remove(out.request_id)
            if live and rng.random() < 0.15:                          # abort someone mid-way
                engine.abort_request(live.pop(rng.randrange(len(live))))
                aborted += 1
        for _ in range(2000):
            if not engine.has_unfinished_requests():
                break
            for out in engine.step():
                if out.finished:
                    finished += 1
                    live.remove(out.request_id)
        assert not engine.has_unfinished_requests() and not live
        assert finished + aborted == 250
        assert bm.num_free_blocks == bm.num_blocks, "blocks leaked"
        assert all(c == 0 for c in bm.ref_counts)
        assert engine.spec_metrics.num_drafted > 0
