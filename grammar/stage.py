"""GrammarStage: the engine's grammar work per step, over a whole batch.

The engine calls, in its step order:
  admit()        requests whose grammar finished compiling join the scheduler;
                 ones whose grammar failed are handed back with the reason
  constrain()    grammar-aware drafting on the proposers' trees
  tree_masks()   one bitmask row per tree node, for the verifier
  advance()      matchers accept the emitted tokens
Counts (pruned / forced draft tokens, grammar CPU time) go to SpecMetrics.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import torch

from grammar.compiler import GrammarCache, result_or_raise
from grammar.matcher import RequestGrammar
from specdec.containment import contained
from specdec.draft_tree import DraftTree
from specdec.request import Request
from specdec.scheduler import SchedulerOutput
from specdec.speculative import SpecMetrics
from specdec.verifier import AcceptResult


class GrammarStage:
    def __init__(self, tokenizer, vocab_size: int, metrics: SpecMetrics):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.metrics = metrics
        self._cache: GrammarCache | None = None
        self._cache_lock = threading.Lock()   # the server compiles from a worker thread too
        self.aware_drafting = True          # False: drafts verified as proposed (benchmark baseline)
        self.compiling: dict[str, tuple[Request, Future, float]] = {}   # request id -> (req, future, t0)

    @property
    def cache(self) -> GrammarCache:
        """Built on first use: a TokenizerInfo scan of the vocabulary costs ~0.1 s."""
        if self._cache is None:
            with self._cache_lock:
                if self._cache is None:
                    self._cache = GrammarCache(self.tokenizer, self.vocab_size)
        return self._cache

    # ---- requests ------------------------------------------------------------------------
    def compile_blocking(self, req_params) -> None:
        """Compile a request's grammar now (cached). Raises ValueError if it does not compile."""
        spec = req_params.grammar_spec()
        if spec is not None:
            self.cache.compile(spec)

    def submit(self, req: Request) -> bool:
        """Start compiling req's grammar. True = ready now (or no grammar): schedule it at once.

        A cached failure raises ValueError here, before the request is queued.
        """
        spec = req.params.grammar_spec()
        if spec is None:
            return True
        fut = self.cache.submit(spec)
        if fut.done():
            self._attach(req, result_or_raise(fut, 0))
            return True
        self.compiling[req.request_id] = (req, fut, time.monotonic())
        return False

    def admit(self) -> tuple[list[Request], list[tuple[Request, str]]]:
        """(requests now ready to schedule, (request, reason) pairs whose grammar failed)."""
        ready, failed = [], []
        for rid, (req, fut, t0) in list(self.compiling.items()):
            timed_out = time.monotonic() - t0 > self.cache.timeout_s
            if not fut.done() and not timed_out:
                continue
            del self.compiling[rid]
            try:
                self._attach(req, result_or_raise(fut, 0))
                ready.append(req)
            except ValueError as e:
                failed.append((req, str(e)))
        return ready, failed

    def wait(self, timeout_s: float) -> None:
        """Idle engine, compiles in flight: sleep until one finishes (instead of spinning)."""
        futs = [f for _, f, _ in self.compiling.values()]
        if futs:
            from concurrent.futures import FIRST_COMPLETED, wait
            wait(futs, timeout=timeout_s, return_when=FIRST_COMPLETED)

    def drop(self, request_id: str) -> Request | None:
        entry = self.compiling.pop(request_id, None)
        return entry[0] if entry else None

    def _attach(self, req: Request, compiled) -> None:
        stops = sorted(set(req.eos_token_ids) | set(req.params.stop_token_ids))
        req.grammar = RequestGrammar(compiled, self.vocab_size, stops)

    # ---- the step -------------------------------------------------------------------------
    def constrain(self, batch: SchedulerOutput, trees: list[DraftTree | None], can_renumber: bool) -> None:
        """Grammar-aware drafting, in place on `trees`: prune rejected drafts, add forced ones."""
        if not self.aware_drafting:
            return
        t0 = time.perf_counter()
        for b, (s, tree) in enumerate(zip(batch.scheduled, trees)):
            if tree is None or s.req.grammar is None or s.num_lookahead == 0 or s.req.error is not None:
                continue
            with contained(s.req, "grammar"):
                trees[b], pruned, forced = s.req.grammar.constrain_draft(tree, s.num_lookahead, can_renumber)
                self.metrics.num_grammar_pruned += pruned
                self.metrics.num_grammar_forced += forced
        self.metrics.grammar_time_s += time.perf_counter() - t0

    def tree_masks(self, batch: SchedulerOutput, trees: list[DraftTree | None]) -> list[torch.Tensor | None] | None:
        """Per request: [num_nodes, ceil(V/32)] int32 allowed-token bitmask, or None (no grammar,
        or a prefill chunk that samples nothing). None for the whole batch when nobody has a grammar."""
        if not any(s.req.grammar is not None for s in batch.scheduled):
            return None
        t0 = time.perf_counter()
        masks: list[torch.Tensor | None] = [None] * len(trees)
        for b, (s, tree) in enumerate(zip(batch.scheduled, trees)):
            if tree is not None and s.req.grammar is not None and s.req.error is None:
                with contained(s.req, "grammar"):      # a failed mask fails its request only
                    masks[b] = s.req.grammar.tree_bitmask(tree)
        self.metrics.grammar_time_s += time.perf_counter() - t0
        return masks

    def advance(self, batch: SchedulerOutput, results: list[AcceptResult | None]) -> None:
        """Matchers accept each request's emitted tokens (mutates matchers and, when the grammar
        ends early, `results`: tokens after a terminating stop token are dropped)."""
        t0 = time.perf_counter()
        for s, result in zip(batch.scheduled, results):
            g = s.req.grammar
            if g is None or result is None or s.req.error is not None:
                continue
            with contained(s.req, "grammar"):
                self._advance_one(s.req, g, result)
        self.metrics.grammar_time_s += time.perf_counter() - t0

    def _advance_one(self, req: Request, g: RequestGrammar, result: AcceptResult) -> None:
        n = g.advance(result.token_ids)
        self.metrics.num_grammar_tokens += n
        if n < len(result.token_ids):
            if not g.is_terminated:
                # the masks make this unreachable; end the request rather than emit invalid text
                req.finish_reason = "abort"
                req.stop_reason = "grammar rejected a verified token"
            del result.token_ids[n:]
            del result.source_nodes[n:]
