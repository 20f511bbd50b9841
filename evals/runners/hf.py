"""HF transformers `generate`: the reference every row is compared against.

Variants share one loaded model: plain greedy, and assisted generation with
prompt lookup (`prompt_lookup_num_tokens`), with early exit (the model's first
N layers draft, `assistant_early_exit`), or with an assistant (draft) model
when one is given.
"""
from __future__ import annotations

import contextlib
import time

import torch
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from evals.runners.generation import BatchResult, Generation


class TokenClock(BaseStreamer):
    """Streamer that timestamps tokens as `generate` hands them out.

    generate() first puts the prompt, then every step's new tokens: one
    token for plain decoding, all accepted tokens at once for assisted
    generation (which then share a timestamp, as in our engine).
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        now = time.perf_counter()
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.times.extend([now] * value.numel())

    def end(self) -> None:
        pass


class ForwardCounter:
    """Counts full-depth forward calls of a model (target forwards -> tau).

    Early-exit drafting calls the same module with config.num_hidden_layers
    lowered for the duration of the draft; those calls are drafts, not
    target forwards, so they are not counted.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.count = 0
        self._config = module.config
        self._num_layers = module.config.num_hidden_layers
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args, kwargs=None) -> None:
        if self._config.num_hidden_layers == self._num_layers:
            self.count += 1

    def remove(self) -> None:
        self._handle.remove()


@contextlib.contextmanager
def _no_eos(*models):
    """Make generate() ignore EOS (fixed-length rows).

    Passing eos_token_id=None in our GenerationConfig is not enough: generate()
    fills fields left at their global default from the model's own config,
    which names EOS. So clear it on the models for the duration of the call.
    """
    saved = [(m.generation_config, m.generation_config.eos_token_id) for m in models]
    for cfg, _ in saved:
        cfg.eos_token_id = None
    try:
        yield
    finally:
        for cfg, eos in saved:
            cfg.eos_token_id = eos


class HFRunner:
    """One row: HF generate, optionally assisted by prompt lookup or a draft model."""

    def __init__(self, name: str, model, eos_token_id: int, prompt_lookup_num_tokens: int | None = None,
                 assistant_model=None, assistant_early_exit: int | None = None,
                 num_assistant_tokens: int | None = None) -> None:
        self.name = name
        self.model = model
        self.eos_token_id = eos_token_id
        self.prompt_lookup_num_tokens = prompt_lookup_num_tokens
        self.assistant_model = assistant_model
        self.assistant_early_exit = assistant_early_exit  # draft = the model's first N layers
        self.num_assistant_tokens = num_assistant_tokens

    def _config(self, max_tokens: int, ignore_eos: bool) -> GenerationConfig:
        extra = {}
        if self.prompt_lookup_num_tokens:
            extra["prompt_lookup_num_tokens"] = self.prompt_lookup_num_tokens
        if self.assistant_early_exit:
            extra["assistant_early_exit"] = self.assistant_early_exit
        if (self.assistant_model is not None or self.assistant_early_exit) and self.num_assistant_tokens:
            # constant: HF's default "heuristic" schedule adapts k per step, which
            # would make this row's draft length differ from the engine's.
            extra.update(num_assistant_tokens=self.num_assistant_tokens,
                         num_assistant_tokens_schedule="constant")
        return GenerationConfig(
            max_new_tokens=max_tokens, do_sample=False, pad_token_id=self.eos_token_id,
            eos_token_id=None if ignore_eos else self.eos_token_id, **extra)

    def _models(self):
        return [m for m in (self.model, self.assistant_model) if m is not None]

    @torch.inference_mode()
    def generate(self, prompt_ids: list[int], max_tokens: int, ignore_eos: bool) -> Generation:
        input_ids = torch.tensor([prompt_ids])
        clock = TokenClock()
        counter = ForwardCounter(self.model)
        eos_ctx = _no_eos(*self._models()) if ignore_eos else contextlib.nullcontext()
        kwargs = {"assistant_model": self.assistant_model} if self.assistant_model is not None else {}
        try:
            with eos_ctx:
                arrival = time.perf_counter()
                out = self.model.generate(
                    input_ids, attention_mask=torch.ones_like(input_ids),
                    generation_config=self._config(max_tokens, ignore_eos), streamer=clock, **kwargs)
        finally:
            counter.remove()
        new_ids = out[0, len(prompt_ids):].tolist()
        return Generation(token_ids=new_ids, arrival_time=arrival, token_times=clock.times,
                          num_forwards=counter.count)

    @torch.inference_mode()
    def generate_batch(self, prompts: list[list[int]], max_tokens: int, ignore_eos: bool) -> BatchResult:
        """Plain greedy over a left-padded batch (assisted generation is batch-1 only in HF)."""
        assert not (self.prompt_lookup_num_tokens or self.assistant_model or self.assistant_early_exit)
        width = max(len(p) for p in prompts)
        pad = self.eos_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        eos_ctx = _no_eos(self.model) if ignore_eos else contextlib.nullcontext()
        with eos_ctx:
            start = time.perf_counter()
            out = self.model.generate(input_ids, attention_mask=mask,
                                      generation_config=self._config(max_tokens, ignore_eos))
            wall = time.perf_counter() - start
        gens = []
        for row in out[:, width:].tolist():
            if not ignore_eos and self.eos_token_id in row:  # finished rows are padded after EOS
                row = row[:row.index(self.eos_token_id) + 1]
            # HF gives no per-token times for a batch; only the wall time is used.
            gens.append(Generation(token_ids=row, arrival_time=start, token_times=[start + wall] * len(row)))
        return BatchResult(wall_time=wall, generations=gens)

    def close(self) -> None:
        pass  # the model is shared by the HF rows; the caller drops it
