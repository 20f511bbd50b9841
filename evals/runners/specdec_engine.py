"""specdec: drives `llm.engine` step by step, as the server would.

Timestamps come from the engine's own RequestMetrics (arrival_time and
token_times share the engine's clock), so they include scheduling and
detokenization, not just the forward.
"""
from __future__ import annotations

import gc
import itertools
import time


def specdec_import_error() -> str | None:
    """None when `from specdec import LLM` works, else why not (the rows are then skipped)."""
    try:
        from specdec import LLM  # noqa: F401
    except Exception as e:  # the engine may be half-written: any failure skips the rows
        return f"`from specdec import LLM` failed: {type(e).__name__}: {e}"
    return None


class SpecdecRunner:
    def __init__(self, name: str, llm, temperature: float = 0.0) -> None:
        self.name = name
        self.llm = llm
        self.temperature = temperature
        self._ids = itertools.count()
        self._seeds = itertools.count()    # request i of every runner gets seed i

    @classmethod
    def load(cls, name: str, model: str | None, dtype: str,
             speculative_config: dict | None, temperature: float = 0.0) -> "SpecdecRunner":
        import torch

        from specdec import LLM
        # --threads pins the engine's thread count (its own default follows the machine's load).
        # No prefix cache: every prompt shares the chat template's system prompt,
        # and neither HF nor our llama.cpp runner reuses it, so a cached prefix
        # would make TTFT incomparable. Batch-1 TTFT here is a cold prefill.
        # A step budget that prefills every prompt of a batch at once: each prompt is then
        # computed in one chunk in every row, so speculative rows can be checked token for
        # token against plain decoding at the same batch size (chunking depends on the budget
        # left over by lookahead slots otherwise; see docs/architecture.md, CPU fast path).
        return cls(name, LLM(model=model, dtype=dtype, speculative_config=speculative_config,
                             enable_prefix_caching=False, max_num_batched_tokens=32768,
                             num_threads=torch.get_num_threads()), temperature)

    def _params(self, max_tokens: int, ignore_eos: bool):
        from specdec import SamplingParams
        if self.temperature > 0:
            return SamplingParams(max_tokens=max_tokens, temperature=self.temperature, ignore_eos=ignore_eos,
                                  seed=next(self._seeds))
        return SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=ignore_eos)

    def _run(self, prompts: list[list[int]], max_tokens: int, ignore_eos: bool) -> list:
        engine = self.llm.engine
        params = self._params(max_tokens, ignore_eos)
        rids = [f"bench-{next(self._ids)}" for _ in prompts]
        for rid, ids in zip(rids, prompts):
            engine.add_request(rid, list(ids), params)
        finished = {}
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    finished[out.request_id] = out
        missing = [r for r in rids if r not in finished]
        assert not missing, f"engine never finished {missing}"
        return [finished[r] for r in rids]

    @staticmethod
    def _generation(out):
        from evals.runners.generation import Generation
        m = out.metrics
        return Generation(
            token_ids=list(out.outputs[0].token_ids), arrival_time=m.arrival_time,
            token_times=list(m.token_times), num_forwards=m.num_forwards,
            accepted_per_depth=list(m.accepted_per_depth), drafted_per_depth=list(m.drafted_per_depth),
            num_cached_prompt_tokens=m.num_cached_prompt_tokens)

    def generate(self, prompt_ids: list[int], max_tokens: int, ignore_eos: bool):
        return self._generation(self._run([prompt_ids], max_tokens, ignore_eos)[0])

    def generate_batch(self, prompts: list[list[int]], max_tokens: int, ignore_eos: bool):
        from evals.runners.generation import BatchResult
        start = time.perf_counter()
        outs = self._run(prompts, max_tokens, ignore_eos)
        wall = time.perf_counter() - start
        return BatchResult(wall_time=wall, generations=[self._generation(o) for o in outs])

    def close(self) -> None:
        del self.llm
        gc.collect()
