"""LLM: the offline Python API, in vLLM's shape."""
from __future__ import annotations

from typing import Any, Sequence

from specdec.config import EngineConfig
from specdec.engine import LLMEngine
from specdec.outputs import RequestOutput
from specdec.chat_messages import normalize_messages, render_tool_calls_as_text
from specdec.sampling_params import SamplingParams
from specdec.validation import check_bool, check_text

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
        """Generate for every prompt (text, or token ids via `prompt_token_ids`); outputs in input order.

        Bad input raises ValueError before anything is queued. A request that fails while
        running comes back with finish_reason "error" and the reason in `outputs[0].error`.
        """
        if prompts is None and prompt_token_ids is None:
            raise ValueError("give prompts or prompt_token_ids")
        if isinstance(prompts, str):
            prompts = [prompts]
        if prompts is not None and not isinstance(prompts, (list, tuple)):
            raise ValueError(f"prompts must be a string or a list of strings, got {type(prompts).__name__}")
        if prompt_token_ids is not None and not isinstance(prompt_token_ids, (list, tuple)):
            raise ValueError("prompt_token_ids must be a list of token-id lists, "
                             f"got {type(prompt_token_ids).__name__}")
        texts: list[str | None] = list(prompts) if prompts is not None else [None] * len(prompt_token_ids)
        if prompt_token_ids is None:
            for i, t in enumerate(texts):
                check_text(f"prompts[{i}]", t)
                if not t:
                    raise ValueError(f"prompts[{i}] is empty: give a non-empty string")
            prompt_token_ids = [self.tokenizer.encode(t) for t in texts]
        else:
            for i, t in enumerate(texts):
                if t is not None:
                    check_text(f"prompts[{i}]", t)
        if len(prompt_token_ids) != len(texts):
            raise ValueError("prompts and prompt_token_ids differ in length")
        params = self._params_list(sampling_params, len(texts))
        return self._run(texts, list(prompt_token_ids), params)   # ids are checked by add_request

    def chat(self, messages: Conversation | Sequence[Conversation],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
             add_generation_prompt: bool = True, tools: list[dict] | None = None,
             tool_choice: str | dict = "auto", parallel_tool_calls: bool = True,
             tool_call_parser: str | None = None) -> list[RequestOutput]:
        """Apply the model's chat template to each conversation, then generate.

        `messages` is one conversation (a list of OpenAI-style message dicts) or a list of them.
        With `tools` (OpenAI shape), the tools go into the prompt and calls come back in
        `CompletionOutput.tool_calls` (finish_reason "tool_calls"); `tool_choice` "required" or
        a named function is forced by the grammar, "auto" lets the model choose (docs/grammar.md).
        `tool_call_parser` ("hermes" | "llama3") overrides the format read from the chat template.
        """
        if not isinstance(messages, (list, tuple)) or not messages:
            raise ValueError("messages must be a non-empty list of messages (or of conversations)")
        convs = list(messages) if isinstance(messages[0], (list, tuple)) else [messages]
        params = self._params_list(sampling_params, len(convs))
        if tools is None:
            texts = [self.apply_chat_template(c, add_generation_prompt) for c in convs]
        else:
            from grammar.tools import render_with_tools
            params = [self.tool_params(p, tools, tool_choice, parallel_tool_calls, tool_call_parser)
                      for p in params]
            texts = [render_with_tools(self.tokenizer, normalize_messages(c), tools, add_generation_prompt)
                     for c in convs]
        ids = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        return self._run(texts, ids, params)

    def tool_params(self, params: SamplingParams, tools: list[dict], tool_choice: str | dict = "auto",
                    parallel_tool_calls: bool = True, tool_call_parser: str | None = None) -> SamplingParams:
        """`params` plus the tool-call grammar and parser for these tools (the server uses this too).
        Raises ValueError for malformed tools, an unknown tool name, or a second grammar."""
        from grammar.tools import tool_params
        return tool_params(params, tools, tool_choice, parallel_tool_calls, tool_call_parser,
                           self.tokenizer.chat_template)

    def apply_chat_template(self, conversation: Conversation, add_generation_prompt: bool = True) -> str:
        """Validate and normalise the messages (specdec/chat_messages.py), then render the template."""
        import jinja2

        if self.tokenizer.chat_template is None:
            raise ValueError("this model has no chat template; use generate() with a plain prompt")
        check_bool("add_generation_prompt", add_generation_prompt)
        conversation = normalize_messages(conversation)
        if "tool_calls" not in self.tokenizer.chat_template:
            conversation = render_tool_calls_as_text(conversation)
        try:
            return self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        except jinja2.TemplateError as e:   # the template's own checks (e.g. role order)
            raise ValueError(f"messages: the chat template rejected them: {e}") from None

    def abort_request(self, request_id: str) -> None:
        """End a request and free its blocks now (see LLMEngine.abort_request)."""
        self.engine.abort_request(request_id)

    def get_metrics(self) -> list:
        """Engine metrics in vLLM's shape (see specdec/metrics.py): tau = 1 + accepted / drafts."""
        from specdec.metrics import engine_metrics
        return engine_metrics(self.engine)

    # ---- internals -------------------------------------------------------------
    @staticmethod
    def _params_list(sp, n: int) -> list[SamplingParams]:
        if sp is None or isinstance(sp, SamplingParams):
            return [sp or SamplingParams()] * n
        if not isinstance(sp, (list, tuple)) or not all(isinstance(p, SamplingParams) for p in sp):
            raise ValueError("sampling_params must be a SamplingParams or a list of them")
        if len(sp) != n:
            raise ValueError(f"got {len(sp)} SamplingParams for {n} prompts")
        return list(sp)

    def _run(self, texts, ids_list, params_list) -> list[RequestOutput]:
        engine = self.engine
        # validate everything before queueing anything, so one bad prompt cannot strand the rest
        order = []
        try:
            for params in params_list:    # a grammar that does not compile fails here, nothing queued
                engine.prepare_grammar(params)
            for text, ids, params in zip(texts, ids_list, params_list):
                order.append(engine.add_request(None, ids, params, prompt=text))
        except Exception:
            for rid in order:
                engine.abort_request(rid)
            raise
        reqs = {rid: engine.requests[rid] for rid in order}
        final: dict[str, RequestOutput] = {}
        while len(final) < len(order):
            for out in engine.step():
                if out.finished and out.request_id in reqs:
                    final[out.request_id] = out
            for rid, req in reqs.items():   # aborted (abort_request) meanwhile: no output of its own
                if rid not in final and rid not in engine.requests:
                    final[rid] = engine.output_processor.final_output(req)
            if len(final) < len(order) and not engine.has_unfinished_requests():
                raise RuntimeError("engine went idle before every request finished")
        return [final[rid] for rid in order]
