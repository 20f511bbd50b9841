"""OutputProcessor: appends a step's emitted tokens to each request, one at a time.

Speculation emits several tokens per step, and any of them may end the request
(EOS, a stop token, max_tokens, the context limit, or a stop string that
completes mid-way); tokens after the one that ends it are dropped. Also
records logprobs and latency / acceptance metrics.
"""
from __future__ import annotations

import time

import torch

from grammar.reasoning_parser import split_reasoning
from grammar.tool_parser import parse_tool_calls
from specdec.containment import contained
from specdec.detokenizer import IncrementalDetokenizer
from specdec.draft_tree import DraftTree
from specdec.outputs import CompletionOutput, RequestOutput, SpecStep
from specdec.request import Request
from specdec.sampler import make_logprob
from specdec.scheduler import SchedulerOutput
from specdec.speculative import count_per_depth
from specdec.verifier import AcceptResult


class OutputProcessor:
    def __init__(self, tokenizer, max_model_len: int):
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len

    def init_request(self, req: Request) -> None:
        req.detok = IncrementalDetokenizer(self.tokenizer, req.params.stop,
                                           req.params.include_stop_str_in_output)

    def emit(self, batch: SchedulerOutput, trees: list[DraftTree | None],
             results: list[AcceptResult | None], logits: torch.Tensor,
             cu_logits: list[int]) -> list[RequestOutput]:
        now = time.monotonic()
        outputs = []
        for b, (s, tree, result) in enumerate(zip(batch.scheduled, trees, results)):
            req = s.req
            if result is not None and req.error is None:   # None: mid-prefill chunk, or failed
                with contained(req, "output"):
                    outputs.append(self._emit_one(req, tree, result, logits, cu_logits[b], now))
            if req.error is not None:
                outputs.append(self.final_output(req))
        return outputs

    def _emit_one(self, req: Request, tree: DraftTree | None, result: AcceptResult,
                  logits: torch.Tensor, first_row: int, now: float) -> RequestOutput:
        self._record_speculation(req, tree, result)
        new_ids = []
        for token_id, node in zip(result.token_ids, result.source_nodes):
            req.token_ids.append(token_id)
            new_ids.append(token_id)
            req.metrics.token_times.append(now)
            if req.logprobs is not None:
                req.logprobs.append(make_logprob(logits[first_row + node], token_id, req.params.logprobs))
            if self._check_finish(req, token_id):
                break
        if req.metrics.first_token_time is None:
            req.metrics.first_token_time = now
        req.metrics.num_forwards += 1
        return self.make_output(req, new_ids, [spec_step(tree, result)])

    def make_output(self, req: Request, new_ids: list[int],
                    spec_steps: list[SpecStep] | None = None) -> RequestOutput:
        finished = req.finish_reason is not None
        if finished:
            req.detok.flush()
            req.metrics.finished_time = time.monotonic()
        delta = req.detok.delta(finished)
        text, reasoning, tool_calls = parse_structure(req, req.detok.text[:req.detok.num_emitted_chars], finished)
        finish_reason = "tool_calls" if tool_calls and req.finish_reason == "stop" else req.finish_reason
        completion = CompletionOutput(
            index=0, text=text,
            token_ids=list(req.output_token_ids), finish_reason=finish_reason,
            stop_reason=req.stop_reason, logprobs=req.logprobs,
            delta_text=delta, delta_token_ids=new_ids, spec_steps=spec_steps or [],
            reasoning_content=reasoning, tool_calls=tool_calls)
        return RequestOutput(req.request_id, req.prompt, req.prompt_token_ids, [completion],
                             finished, req.metrics)

    def final_output(self, req: Request) -> RequestOutput:
        """The last output of a request that ended outside the normal path (failed, or its step
        failed). Reads the detokenizer's state without calling it: it may be what failed."""
        req.metrics.finished_time = time.monotonic()
        detok = req.detok
        text = detok.text[:detok.num_emitted_chars] if detok is not None else ""
        completion = CompletionOutput(
            index=0, text=text, token_ids=list(req.output_token_ids), finish_reason=req.finish_reason,
            stop_reason=req.stop_reason, logprobs=req.logprobs, error=req.error)
        return RequestOutput(req.request_id, req.prompt, req.prompt_token_ids, [completion], True,
                             req.metrics)

    def _check_finish(self, req: Request, token_id: int) -> bool:
        p = req.params
        stop_string = req.detok.add_token(token_id)
        if token_id in req.eos_token_ids and not p.ignore_eos:
            req.finish_reason, req.stop_reason = "stop", None
        elif token_id in p.stop_token_ids:
            req.finish_reason, req.stop_reason = "stop", token_id
        elif stop_string is not None:
            req.finish_reason, req.stop_reason = "stop", stop_string
        elif p.max_tokens is not None and req.num_output_tokens >= p.max_tokens:
            req.finish_reason = "length"
        elif req.num_tokens >= self.max_model_len:
            req.finish_reason = "length"
        return req.finish_reason is not None

    @staticmethod
    def _record_speculation(req: Request, tree: DraftTree | None, result: AcceptResult) -> None:
        if tree is None or tree.num_nodes == 1:
            return
        m = req.metrics
        m.num_drafted_tokens += tree.num_draft_tokens
        m.num_accepted_tokens += result.num_accepted
        count_per_depth(m.drafted_per_depth, m.accepted_per_depth, max(tree.depths), result.num_accepted)


def parse_structure(req: Request, text: str, finished: bool) -> tuple[str, str | None, list[dict] | None]:
    """(text, reasoning_content, tool_calls) under the request's parsers. `delta_text` stays raw
    model text: streaming clients feed it to grammar's stream parsers instead."""
    p = req.params
    reasoning = None
    if p.reasoning_parser is not None:
        reasoning, text = split_reasoning(text)
    tool_calls = None
    if p.tool_call_parser is not None and finished:
        text, calls = parse_tool_calls(text, p.tool_call_parser, id_prefix=f"call_{req.request_id}_")
        tool_calls = calls or None
    return text, reasoning, tool_calls


def spec_step(tree: DraftTree, result: AcceptResult) -> SpecStep:
    """The accepted path, then the draft's first-child path below it (what was rejected)."""
    node = result.accepted_nodes[-1] if result.accepted_nodes else 0
    rejected = []
    while tree.children(node):
        node = tree.children(node)[0]
        rejected.append(tree.token_ids[node])
    accepted = [tree.token_ids[n] for n in result.accepted_nodes]
    return SpecStep(accepted + rejected, len(accepted), result.token_ids[-1])
