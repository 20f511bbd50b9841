"""llama.cpp through llama-cpp-python (optional: bash evals/install_llamacpp.sh).

llama.cpp runs the GGUF's Q4_1 weights as they are, while HF and specdec
dequantize them to --dtype; its tokens can therefore differ from theirs
(the "= plain" column tells how often) and its speed reflects 4-bit matmuls.
"""
from __future__ import annotations

import gc
import time

from evals.runners.generation import Generation

# Same draft length as the engine's n-gram speculator row, so the
# comparison is of implementations, not of settings.
PROMPT_LOOKUP_NUM_TOKENS = 4


def llamacpp_import_error() -> str | None:
    try:
        import llama_cpp  # noqa: F401
    except Exception as e:
        return f"llama-cpp-python not installed ({type(e).__name__}); run: bash evals/install_llamacpp.sh"
    return None


class LlamaCppRunner:
    def __init__(self, name: str, gguf_path: str, num_threads: int, prompt_lookup: bool,
                 n_ctx: int = 4096) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
        self.name = name
        draft = LlamaPromptLookupDecoding(num_pred_tokens=PROMPT_LOOKUP_NUM_TOKENS) if prompt_lookup else None
        self.llm = Llama(model_path=gguf_path, n_ctx=n_ctx, n_batch=512, n_threads=num_threads,
                         n_threads_batch=num_threads, draft_model=draft, seed=0, verbose=False)
        self.num_forwards = 0
        eval_fn = self.llm.eval

        def counting_eval(tokens):  # one llama_decode call per eval (prompts < n_batch)
            self.num_forwards += 1
            return eval_fn(tokens)
        self.llm.eval = counting_eval

    def generate(self, prompt_ids: list[int], max_tokens: int, ignore_eos: bool) -> Generation:
        # reset(): llama-cpp-python otherwise reuses the KV of the previous
        # prompt's shared prefix (the system prompt), a prefix cache the HF
        # rows do not have; batch-1 TTFT here is always a cold prefill.
        self.llm.reset()
        self.num_forwards = 0
        eos = self.llm.token_eos()
        ids: list[int] = []
        times: list[float] = []
        arrival = time.perf_counter()
        last_eval = -1
        for tok in self.llm.generate(prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0,
                                     repeat_penalty=1.0, reset=True):
            # Tokens sampled from one eval (accepted drafts) form one emission and
            # share its timestamp, as in the other runners; yielding them one by
            # one is an artefact of the Python iterator.
            same_eval = self.num_forwards == last_eval
            times.append(times[-1] if same_eval else time.perf_counter())
            last_eval = self.num_forwards
            ids.append(int(tok))
            if len(ids) >= max_tokens or (not ignore_eos and tok == eos):
                break
        return Generation(token_ids=ids, arrival_time=arrival, token_times=times,
                          num_forwards=self.num_forwards)

    def close(self) -> None:
        self.llm.close()
        del self.llm
        gc.collect()
