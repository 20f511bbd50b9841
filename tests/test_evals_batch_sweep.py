"""Batch sweep loop and check on fake runners."""
from evals import batch_sweep
from evals.harness import FAIL, OK, PLAIN, RowSpec
from evals.runners.generation import BatchResult, Generation


class FakeBatchRunner:
    def __init__(self, name, wrong_batch=None):
        self.name, self.wrong_batch, self.closed = name, wrong_batch, False

    def generate_batch(self, prompts, max_tokens, ignore_eos):
        gens = []
        for p in prompts:
            ids = [p[-1] + i for i in range(max_tokens)]
            if len(prompts) == self.wrong_batch:
                ids[-1] = -1
            gens.append(Generation(ids, 0.0, [1.0] * max_tokens))
        return BatchResult(wall_time=0.5 * len(prompts) ** 0.5, generations=gens)

    def close(self):
        self.closed = True


def test_sweep_measures_every_batch_and_check_flags_wrong_batches():
    prompts = [[i] for i in range(16)]
    specs = [RowSpec(PLAIN, "specdec", lambda: FakeBatchRunner(PLAIN)),
             RowSpec("specdec good", "specdec", lambda: FakeBatchRunner("g"), is_speculative=True),
             RowSpec("specdec bad", "specdec", lambda: FakeBatchRunner("b", wrong_batch=4),
                     is_speculative=True),
             RowSpec("specdec none", "specdec", None, skipped="not importable", is_speculative=True)]
    notes = []
    res = batch_sweep.sweep(specs, prompts, [1, 4, 16], 8, notes)
    assert sorted(res[PLAIN]) == [1, 4, 16]
    assert res[PLAIN][16].output_tok_s == 16 * 8 / 2.0
    assert batch_sweep.check(res["specdec good"], res[PLAIN]) == OK
    assert batch_sweep.check(res["specdec bad"], res[PLAIN]) == FAIL
    assert batch_sweep.check(res["specdec good"], {}) == FAIL
    assert res["specdec none"] == {} and notes == ["specdec none: not importable"]


def test_paired_ratios_cancel_drift():
    from evals import batch_sweep
    rounds = {batch_sweep.PLAIN: {4: [100.0, 80.0, 60.0]},      # the machine slows down
              "spec": {4: [101.0, 81.0, 59.0]}}
    r = batch_sweep.paired_ratios(rounds, [batch_sweep.PLAIN, "spec"], [4, 16])
    assert set(r) == {"spec"} and 16 not in r["spec"]
    assert r["spec"][4] == 101.0 / 100.0                        # median of 1.01, 1.0125, 0.983
