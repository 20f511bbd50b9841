"""The specdec runner drives engine.add_request / step and reads RequestMetrics."""
import pytest

from evals.runners.specdec_engine import SpecdecRunner, specdec_import_error
from specdec.outputs import CompletionOutput, RequestMetrics, RequestOutput


class FakeEngine:
    """Emits 2 tokens per step (a speculative step accepting 1 draft) at times 1.0, 1.1, ..."""

    def __init__(self):
        self.reqs = {}
        self.clock = 0.5

    def add_request(self, request_id, prompt_token_ids, params):
        assert params.is_greedy and params.ignore_eos
        metrics = RequestMetrics(arrival_time=self.clock)
        self.reqs[request_id] = (prompt_token_ids, params.max_tokens, metrics, [])

    def has_unfinished_requests(self):
        return bool(self.reqs)

    def step(self):
        self.clock += 0.1 if self.clock > 0.5 else 0.5
        outs = []
        for rid, (prompt, max_tokens, m, out) in list(self.reqs.items()):
            new = [prompt[-1] + len(out) + i for i in range(min(2, max_tokens - len(out)))]
            out += new
            m.token_times += [self.clock] * len(new)
            m.num_forwards += 1
            m.drafted_per_depth = [m.num_forwards]
            m.accepted_per_depth = [m.num_forwards]
            done = len(out) == max_tokens
            if done:
                del self.reqs[rid]
            outs.append(RequestOutput(rid, None, prompt, [CompletionOutput(0, "", list(out))], done, m))
        return outs


class FakeLLM:
    def __init__(self):
        self.engine = FakeEngine()


def test_generate_reads_tokens_and_metrics():
    g = SpecdecRunner("specdec ngram", FakeLLM()).generate([7, 8], 5, ignore_eos=True)
    assert g.token_ids == [8, 9, 10, 11, 12]
    assert g.arrival_time == 0.5 and g.token_times == pytest.approx([1.0, 1.0, 1.1, 1.1, 1.2])
    assert g.num_forwards == 3 and g.tau == pytest.approx(5 / 3)
    assert g.drafted_per_depth == [3] and g.accepted_per_depth == [3]
    assert g.latency.ttft == pytest.approx(0.5) and g.latency.itls == pytest.approx([0.1, 0.1])


def test_generate_batch_runs_requests_together():
    res = SpecdecRunner("specdec plain", FakeLLM()).generate_batch([[1], [20], [300]], 4, ignore_eos=True)
    assert [g.token_ids for g in res.generations] == [[1, 2, 3, 4], [20, 21, 22, 23], [300, 301, 302, 303]]
    assert res.output_tok_s == pytest.approx(12 / res.wall_time)


@pytest.mark.slow
@pytest.mark.skipif(specdec_import_error() is not None, reason="specdec engine not importable")
def test_real_engine_plain_greedy_emits_fixed_length():
    runner = SpecdecRunner.load("specdec plain", None, "float32", None)
    prompt = runner.llm.tokenizer.encode("The capital of France is")
    g = runner.generate(prompt, 6, ignore_eos=True)
    runner.close()
    assert len(g.token_ids) == len(g.token_times) == 6
    assert g.num_forwards == 6 and g.tau == 1.0
    assert g.num_cached_prompt_tokens == 0  # the runner turns the prefix cache off


def test_sampled_runner_seeds_each_request():
    seen = []

    class Recording(FakeEngine):
        def add_request(self, request_id, prompt_token_ids, params):
            seen.append((params.temperature, params.seed))
            metrics = RequestMetrics(arrival_time=self.clock)
            self.reqs[request_id] = (prompt_token_ids, params.max_tokens, metrics, [])

    llm = FakeLLM()
    llm.engine = Recording()
    runner = SpecdecRunner("specdec plain", llm, temperature=1.0)
    runner.generate([1, 2], 3, ignore_eos=True)
    runner.generate([5], 3, ignore_eos=True)
    assert seen == [(1.0, 0), (1.0, 1)]
