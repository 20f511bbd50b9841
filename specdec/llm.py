"""LLM: the offline Python API, in vLLM's shape."""
from __future__ import annotations

from typing import Any, Sequence

from specdec.config import EngineConfig
from specdec.engine import LLMEngine
from specdec.outputs import RequestOutput
from specdec.sampling_params import SamplingParams

Conversation = list[dict[str, Any]]


class LLM:
    """Load a model once; generate for many prompts with continuous batching.

    >>> llm = LLM()                                    # bundled SmolLM2-135M-Instruct
    >>> outs = llm.generate(["Hello"], SamplingParams(temperature=0.0, max_tokens=8))
    """

    def __init__(self, model: str | None = None, dtype: str | None = None,
                 speculative_config: dict | None = None, **engine_kwargs: Any):
        self.engine = LLMEngine(EngineConfig(model=model, dtype=dtype,
                                             speculative_config=speculative_config, **engine_kwargs))
        self.tokenizer = self.engine.tokenizer

    def generate(self, prompts: str | Sequence[str] | None = None,
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 prompt_token_ids: Sequence[Sequence[int]] | None = None) -> list[RequestOutput]:
        """Generate for every prompt (text, or token ids via `prompt_token_ids`); outputs in input order."""
        if prompts is None and prompt_token_ids is None:
            raise ValueError("give prompts or prompt_token_ids")
        if isinstance(prompts, str):
            prompts = [prompts]
        texts: list[str | None] = list(prompts) if prompts is not None else [None] * len(prompt_token_ids)
        if prompt_token_ids is None:
            for t in texts:
                if not isinstance(t, str) or not t:
                    raise ValueError("prompt is empty: give a non-empty string")
            prompt_token_ids = [self.tokenizer.encode(t) for t in texts]
        if len(prompt_token_ids) != len(texts):
            raise ValueError("prompts and prompt_token_ids differ in length")
        params = self._params_list(sampling_params, len(texts))
        return self._run(texts, [list(ids) for ids in prompt_token_ids], params)

    def chat(self, messages: Conversation | Sequence[Conversation],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
             add_generation_prompt: bool = True) -> list[RequestOutput]:
        """Apply the model's chat template to each conversation, then generate."""
        convs = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        texts = [self.apply_chat_template(c, add_generation_prompt) for c in convs]
        ids = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        return self._run(texts, ids, self._params_list(sampling_params, len(convs)))

    def apply_chat_template(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        if self.tokenizer.chat_template is None:
            raise ValueError("this model has no chat template; use generate() with a plain prompt")
        return self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def get_metrics(self) -> list:
        """Engine metrics in vLLM's shape (see specdec/metrics.py): tau = 1 + accepted / drafts."""
        from specdec.metrics import engine_metrics
        return engine_metrics(self.engine)

    # ---- internals -------------------------------------------------------------
    @staticmethod
    def _params_list(sp, n: int) -> list[SamplingParams]:
        if sp is None or isinstance(sp, SamplingParams):
            return [sp or SamplingParams()] * n
        if len(sp) != n:
            raise ValueError(f"got {len(sp)} SamplingParams for {n} prompts")
        return list(sp)

    def _run(self, texts, ids_list, params_list) -> list[RequestOutput]:
        engine = self.engine
        # validate everything before queueing anything, so one bad prompt cannot strand the rest
        order = []
        try:
            for text, ids, params in zip(texts, ids_list, params_list):
                order.append(engine.add_request(None, ids, params, prompt=text))
        except Exception:
            for rid in order:
                engine.abort_request(rid)
            raise
        final: dict[str, RequestOutput] = {}
        while len(final) < len(order):
            if not engine.has_unfinished_requests():
                raise RuntimeError("engine went idle before every request finished")
            for out in engine.step():
                if out.finished:
                    final[out.request_id] = out
        return [final[rid] for rid in order]
