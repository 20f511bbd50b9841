"""LLMEngine: requests in, one step at a time, outputs out.

`step()` is the data flow of DESIGN.md, one named call per stage.
"""
from __future__ import annotations

import itertools
import logging
import time

import torch

from grammar.stage import GrammarStage
from specdec.block_manager import BlockManager
from specdec.config import EngineConfig
from specdec.containment import contained, fail_request
from specdec.draft_tree import DraftTree
from specdec.invariants import check_block_invariants, invariants_enabled
from specdec.kv_pool import KVPool, KVSpec
from specdec.model_runner import ModelRunner, build_step_inputs, slot_of
from specdec.models.llama import LlamaModel
from specdec.output_processor import OutputProcessor
from specdec.outputs import CompletionOutput, RequestOutput
from specdec.request import Request, RequestStatus
from specdec.sampler import (RowContext, apply_penalties_and_bias, apply_token_bitmask, check_finite_mass,
                             target_probs)
from specdec.sampling_params import SamplingParams
from specdec.scheduler import Scheduler, SchedulerOutput
from specdec.spec_policy import SpeculationPolicy, StepCost, expected_accepted
from specdec.speculative import SpecMetrics, SpeculativeConfig
from specdec.threads import ThreadGuard
from specdec.validation import check_token_ids
from specdec.verifier import AcceptResult, verify_greedy, verify_sampled

logger = logging.getLogger(__name__)


def make_attention_backend(name: str, device: str):
    if name == "triton" or (name == "auto" and device.startswith("cuda")):
        from specdec.triton_attention import TritonAttention
        return TritonAttention()
    from specdec.attention import TorchAttention
    return TorchAttention()


class LLMEngine:
    def __init__(self, config: EngineConfig):
        from specdec.loader import bundled_model_path, load_checkpoint

        self.config = config
        t0 = time.monotonic()
        self.threads = ThreadGuard(config.num_threads) if config.device == "cpu" else None
        ckpt = load_checkpoint(config.model or bundled_model_path(),
                               keep_quantized=config.quantization is not None)
        self.model_config = mc = ckpt.config
        self.tokenizer = ckpt.tokenizer
        self.eos_token_ids = tuple(sorted(set(mc.eos_token_ids) | (
            {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())))
        model_len = min(mc.max_position_embeddings, config.max_model_len or mc.max_position_embeddings)
        self.model = LlamaModel(mc, model_len + 64, config.dtype, config.device, config.quantization)
        self.model.load_hf_weights(ckpt.weights)
        self.spec_config = (SpeculativeConfig.from_dict(config.speculative_config)
                            if config.speculative_config else None)
        draft_model = self._load_draft(ckpt, model_len) if self._uses_draft_model() else None
        del ckpt
        self.eagle_head = self._load_eagle() if self._uses_eagle() else None
        specs = [KVSpec(mc.num_layers, mc.num_kv_heads, mc.head_dim)]
        if draft_model is not None:
            dc = draft_model.cfg
            specs.append(KVSpec(dc.num_layers, dc.num_kv_heads, dc.head_dim))
        if self.eagle_head is not None:   # one decoder layer, same block ids
            specs.append(KVSpec(1, self.eagle_head.cfg.num_kv_heads, self.eagle_head.cfg.head_dim))
        if config.num_kv_blocks is not None:
            self.pool = KVPool(specs, config.num_kv_blocks, config.block_size, config.dtype, config.device)
        else:
            self.pool = KVPool.from_budget(specs, config.kv_cache_memory, config.block_size,
                                           config.dtype, config.device)
        # a request may never outgrow what one pool can hold
        self.max_model_len = min(model_len, self.pool.num_blocks * config.block_size)
        self.block_manager = BlockManager(self.pool.num_blocks, config.block_size,
                                          config.enable_prefix_caching)
        attn = make_attention_backend(config.attention_backend, config.device)
        self.attn = attn
        self.runner = ModelRunner(self.model, self.pool.kv[0], config.block_size, attn, config.device)
        self.draft_runner = (ModelRunner(draft_model, self.pool.kv[1], config.block_size, attn, config.device)
                             if draft_model is not None else None)
        self.proposer = self._make_proposer()
        # target features the proposer needs (EAGLE), captured only then; see observe_features
        self.capture_layers = tuple(getattr(self.proposer, "capture_layers", ()))
        self.target_features: torch.Tensor | None = None
        self.spec_metrics = SpecMetrics()
        self.grammar = GrammarStage(self.tokenizer, mc.vocab_size, self.spec_metrics)
        self.step_cost = StepCost()
        self.policy = None
        self._plan: list | None = None       # this step's [tokens planned, tokens expected]
        if self.spec_config is not None:
            sc = self.spec_config
            self.policy = SpeculationPolicy(sc.num_speculative_tokens, self._policy_width(),
                                            self.step_cost if sc.adaptive else None)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs,
                                   config.max_num_batched_tokens, lookahead_fn=self._lookahead,
                                   on_preempt=self._on_preempt)
        self.output_processor = OutputProcessor(self.tokenizer, self.max_model_len)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.requests: dict[str, Request] = {}
        self._ids = itertools.count()
        self.check_invariants = invariants_enabled(config.check_invariants)
        self._in_step = False                 # abort_request during a step waits for its end
        self._deferred_aborts: list[str] = []
        if self.policy is not None and self.policy.cost is not None:
            self._calibrate_step_cost()
        logger.info("engine ready in %.1fs: %d KV blocks of %d tokens, dtype %s",
                    time.monotonic() - t0, self.pool.num_blocks, config.block_size, config.dtype)

    # ---- requests ---------------------------------------------------------------
    def add_request(self, request_id: str | None, prompt_token_ids: list[int],
                    params: SamplingParams | None = None, prompt: str | None = None) -> str:
        """Validate and queue a request. Bad input raises ValueError; nothing else is touched."""
        params = params if params is not None else SamplingParams()
        if not isinstance(params, SamplingParams):
            raise ValueError(f"sampling params must be a SamplingParams, got {type(params).__name__}")
        params.validate()                   # fields may have been changed since construction
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id must be a non-empty string, got {request_id!r}")
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string or None, got {type(prompt).__name__}")
        vocab = self.model_config.vocab_size
        try:
            ids = check_token_ids("prompt_token_ids", prompt_token_ids, vocab)
        except ValueError as e:
            raise ValueError(f"{e} (the vocabulary is [0, {vocab}))") from None
        if len(ids) >= self.max_model_len:
            raise ValueError(f"prompt has {len(ids)} tokens but the context limit is "
                             f"{self.max_model_len} (prompt + at least one new token)")
        for t in list((params.logit_bias or {}).keys()) + list(params.stop_token_ids):
            if not isinstance(t, int) or not 0 <= t < vocab:
                raise ValueError(f"token id {t!r} in logit_bias / stop_token_ids is outside [0, {vocab})")
        req = Request(request_id, ids, params, self.eos_token_ids, prompt=prompt)
        is_ready = self.grammar.submit(req)     # compiles off-thread; a known-bad grammar raises here
        self.output_processor.init_request(req)
        self.requests[request_id] = req
        if is_ready:
            self.scheduler.add(req)
        return request_id

    def prepare_grammar(self, params: SamplingParams) -> None:
        """Compile params' grammar now (blocking, cached), so a bad one raises ValueError before
        the request is queued. Optional: add_request compiles in the background anyway."""
        self.grammar.compile_blocking(params)

    def abort_request(self, request_id: str) -> None:
        """End a request now and free its blocks; unknown or finished ids are ignored.

        Called during a step (from a stage or a hook), it takes effect when the step
        ends, since the step's stages still hold the request's blocks and draft tree.
        Not thread-safe: call it from the thread that runs step().
        """
        if self._in_step:
            self._deferred_aborts.append(request_id)
            return
        req = self.requests.pop(request_id, None)
        if self.grammar.drop(request_id) is not None:
            req.finish_reason = "abort"
            return
        if req is not None and not req.is_finished:
            req.finish_reason = "abort"
            self.scheduler.finish(req)
            if self.proposer is not None:
                self.proposer.reset(req)     # drop per-request draft state with the blocks
            req.spec = None

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished() or bool(self.grammar.compiling)

    # ---- the step -----------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        failed = self.admit_compiled()
        self._plan = None                    # per-step drafting plan, built by _lookahead
        batch = self.scheduler.schedule()
        if batch.is_empty:
            self.grammar.wait(0.05)
            return failed
        self._in_step = True
        t0 = time.perf_counter()
        try:
            trees = self.propose(batch)
            masks = self.grammar.tree_masks(batch, trees)
            inputs = build_step_inputs(batch, trees, self.config.block_size, self.config.device)
            logits = self.forward(inputs)
            results = self.verify(batch, trees, logits, inputs.cu_logits, masks)
            self.commit(batch, trees, results)
            self.observe_features(batch, trees, results)
            self.grammar.advance(batch, results)
            outputs = failed + self.output_processor.emit(batch, trees, results, logits, inputs.cu_logits)
            for req in self.scheduler.update(batch):
                self.requests.pop(req.request_id, None)
            # the whole step's time, not only the forward's: drafting, masks and per-node
            # verification also grow with the tokens drafted, and the policy must pay for them.
            # Only decode / verify steps: a prefill chunk costs per token what they do not.
            # A drafter's one-off catch-up (EAGLE after a prompt or a pause) is left out: it is not
            # what drafting costs per step, and counting it would keep a paused request paused.
            one_off = getattr(self.proposer, "one_off_seconds", 0.0)
            if one_off:
                self.proposer.one_off_seconds = 0.0
            if all(sr.num_new_tokens == 1 for sr in batch.scheduled):
                self.step_cost.observe(inputs.meta.num_tokens, time.perf_counter() - t0 - one_off)
        except Exception as exc:        # the whole step failed (e.g. out of memory in the forward)
            outputs = failed + self._fail_step(batch, exc)
        finally:
            self._in_step = False
        outputs = self._apply_deferred_aborts(outputs)
        if self.check_invariants:
            check_block_invariants(self.block_manager, self.requests.values(),
                                   [s.req for s in batch.scheduled])
        return outputs

    # ---- stages -----------------------------------------------------------------------
    def admit_compiled(self) -> list[RequestOutput]:
        """Requests whose grammar finished compiling join the scheduler; a grammar that failed
        (or timed out) ends its request with finish_reason "abort" and the reason in stop_reason."""
        ready, failed = self.grammar.admit()
        for req in ready:
            self.scheduler.add(req)
        outputs = []
        for req, reason in failed:
            self.requests.pop(req.request_id, None)
            req.finish_reason, req.stop_reason = "abort", reason
            req.status = RequestStatus.FINISHED
            outputs.append(RequestOutput(req.request_id, req.prompt, req.prompt_token_ids,
                                         [CompletionOutput(0, "", [], "abort", reason)], True, req.metrics))
        return outputs

    def forward(self, inputs) -> torch.Tensor:
        """The one target forward of the step (on the thread count the machine's load allows)."""
        if self.threads is not None:
            self.threads.check()
        if self.capture_layers:
            logits, self.target_features = self.runner.forward(inputs, self.capture_layers)
            return logits
        return self.runner.forward(inputs)

    def propose(self, batch: SchedulerOutput) -> list[DraftTree | None]:
        """A draft tree per request that samples this step (root only when not speculating)."""
        trees: list[DraftTree | None] = [
            DraftTree.root_only(s.req.token_ids[-1]) if s.produces_token else None for s in batch.scheduled]
        drafting = [b for b, s in enumerate(batch.scheduled) if s.num_lookahead > 0]
        if drafting:
            reqs = [batch.scheduled[b].req for b in drafting]
            budgets = [batch.scheduled[b].num_lookahead for b in drafting]
            try:
                proposed = self.proposer.propose(reqs, budgets)
            except Exception:           # find whose drafting fails: the rest still speculate
                proposed = [self._propose_alone(req, n) for req, n in zip(reqs, budgets)]
            for b, tree in zip(drafting, proposed):
                trees[b] = tree
            # grammar-aware drafting; a draft model keeps K/V at node slots, so no renumbering
            self.grammar.constrain(batch, trees, can_renumber=not self._uses_draft_model())
        return trees

    def _propose_alone(self, req: Request, budget: int) -> DraftTree:
        self.proposer.reset(req)        # the failed batched call may have left its state half-updated
        with contained(req, "drafting"):
            return self.proposer.propose([req], [budget])[0]
        return DraftTree.root_only(req.token_ids[-1])   # failed: the verify stage skips it

    def verify(self, batch: SchedulerOutput, trees: list[DraftTree | None], logits: torch.Tensor,
               cu_logits: list[int], masks: list[torch.Tensor | None] | None = None
               ) -> list[AcceptResult | None]:
        """Accepted path + bonus per request. masks[b]: optional [N, ceil(V/32)] int32 allowed-token
        bitmask per tree node (grammar), applied to the target before acceptance."""
        results: list[AcceptResult | None] = [None] * len(trees)
        for b, (s, tree) in enumerate(zip(batch.scheduled, trees)):
            req = s.req
            if tree is None or req.error is not None:
                continue
            with contained(req, "sampling"):
                rows = logits[cu_logits[b]:cu_logits[b + 1]]            # [N, V], one per node
                if masks is not None and masks[b] is not None:
                    rows = apply_token_bitmask(rows, masks[b])
                ctx = [RowContext(req.params, req.prompt_token_ids,
                                  req.output_token_ids + [tree.token_ids[n] for n in tree.path_to(i)[1:]],
                                  req.generator) for i in range(tree.num_nodes)]
                p = req.params
                if p.is_greedy:
                    if p.has_penalties or p.logit_bias:
                        rows = apply_penalties_and_bias(rows.clone(), ctx)
                    check_finite_mass(rows, num_rows_needing_mass=1)   # see check_finite_mass
                    results[b] = verify_greedy(tree, rows.argmax(-1).tolist())
                else:
                    probs = target_probs(rows, ctx)
                    results[b] = verify_sampled(tree, probs, req.generator or self.generator)
        return results

    def commit(self, batch: SchedulerOutput, trees: list[DraftTree | None],
               results: list[AcceptResult | None]) -> None:
        """Keep the root's and accepted nodes' K/V: move accepted nodes to consecutive slots.

        Rejected nodes need no work: their slots lie past the new token count and
        are overwritten or freed (rollback) by the scheduler's update.
        """
        src, dst, draft_src, draft_dst = [], [], [], []
        bs = self.config.block_size
        for s, tree, result in zip(batch.scheduled, trees, results):
            s.num_committed = s.num_new_tokens
            req = s.req
            if result is None or tree is None or tree.num_nodes == 1 or req.error is not None:
                continue
            with contained(req, "drafting"):
                base, table = req.num_computed_tokens, req.block_table
                for k, node in enumerate(result.accepted_nodes, start=1):
                    if node != k:
                        src.append(slot_of(table, base + node, bs))
                        dst.append(slot_of(table, base + k, bs))
                d_src, d_dst = self.proposer.commit(req, tree, result)
                draft_src += [slot_of(table, base + i, bs) for i in d_src]
                draft_dst += [slot_of(table, base + i, bs) for i in d_dst]
                s.num_committed += result.num_accepted
                self.spec_metrics.record(tree.depths, result.num_accepted)
                self._after_verify(req, max(tree.depths), result.num_accepted)
        self.runner.commit_kv(src, dst)
        if self.draft_runner is not None:
            self.draft_runner.commit_kv(draft_src, draft_dst)

    def observe_features(self, batch: SchedulerOutput, trees: list[DraftTree | None],
                         results: list[AcceptResult | None]) -> None:
        """Hand the proposer (EAGLE) the target features of this step's committed tokens: every
        row of a prefill chunk or decode token, the root and accepted nodes of a verified tree.
        Rows are laid out as build_step_inputs packed them. A no-op for other proposers."""
        feats, self.target_features = self.target_features, None
        if feats is None:
            return
        row = 0
        for s, tree, result in zip(batch.scheduled, trees, results):
            req = s.req
            if tree is not None and tree.num_nodes > 1:
                keep = [0] + (list(result.accepted_nodes) if result is not None else [])
                idx = torch.tensor([row + k for k in keep], dtype=torch.int64, device=feats.device)
                with contained(req, "drafting"):
                    self.proposer.observe(req, req.num_computed_tokens, feats.index_select(0, idx))
                row += tree.num_nodes
            else:
                with contained(req, "drafting"):
                    self.proposer.observe(req, req.num_computed_tokens, feats[row:row + s.num_new_tokens])
                row += s.num_new_tokens

    # ---- failures and aborts ------------------------------------------------------------
    def _fail_step(self, batch: SchedulerOutput, exc: Exception) -> list[RequestOutput]:
        """Report a whole-step failure to every request of the step and free their blocks.

        Requests the step had already finished keep their finish reason; the rest end
        with "error". Each gets its final output here (the step's own outputs are lost).
        """
        logger.error("step failed for %d requests: %s: %s", len(batch.scheduled),
                     type(exc).__name__, exc, exc_info=exc)
        outputs = []
        for s in batch.scheduled:
            req = s.req
            if req.finish_reason is None:
                fail_request(req, f"the engine step failed: {type(exc).__name__}: {exc}")
            if not req.is_finished:
                self.scheduler.finish(req)
                if self.proposer is not None:
                    self.proposer.reset(req)
            self.requests.pop(req.request_id, None)
            outputs.append(self.output_processor.final_output(req))
        return outputs

    def _apply_deferred_aborts(self, outputs: list[RequestOutput]) -> list[RequestOutput]:
        """Aborts asked for during the step: apply them and drop those requests' outputs."""
        if not self._deferred_aborts:
            return outputs
        # a request that finished in this very step keeps its final output
        aborted = {rid for rid in self._deferred_aborts if rid in self.requests}
        self._deferred_aborts = []
        for rid in aborted:
            self.abort_request(rid)
        return [o for o in outputs if o.request_id not in aborted]

    # ---- speculation plumbing ---------------------------------------------------------
    def _uses_eagle(self) -> bool:
        return self.spec_config is not None and self.spec_config.method in ("eagle", "hybrid")

    def _load_eagle(self):
        """The EAGLE head: its folder, or the one shipped for the bundled model; checked against
        the target's shapes. Its output rows are the target's embedding rows (frozen)."""
        from drafts.eagle_head import load_head
        from drafts.weights import shipped_eagle_path
        mc = self.model_config
        path = self.spec_config.model
        if path is None:
            try:
                path = shipped_eagle_path(mc)
            except ValueError:
                if self.spec_config.method != "hybrid":
                    raise
                logger.warning("no EAGLE head is shipped for this model: hybrid drafts with n-gram alone "
                               "(train one with `python -m drafts.train`, pass speculative_config['model'])")
                return None
        head = load_head(path)
        hc = head.cfg
        if (hc.hidden_size, hc.target_vocab_size, hc.num_kv_heads, hc.head_dim) != (
                mc.hidden_size, mc.vocab_size, mc.num_kv_heads, mc.head_dim) or max(hc.aux_layers) >= mc.num_layers:
            raise ValueError(f"EAGLE head {str(path)!r} was trained for another target (hidden "
                             f"{hc.hidden_size}, vocab {hc.target_vocab_size}, layers {hc.aux_layers})")
        head.attach_target(lambda ids: self.model.embed_tokens(ids))
        if self.model.fused is not None:     # the target runs the 4-bit CPU path: so does the head
            head.compact()
        return head.to(self.config.device)

    def _uses_draft_model(self) -> bool:
        return self.spec_config is not None and self.spec_config.method == "draft_model"

    def _load_draft(self, target_ckpt, model_len: int) -> LlamaModel:
        """The draft model: its own checkpoint, or the target's file (optionally first N layers)."""
        from dataclasses import replace

        from specdec.loader import load_checkpoint
        sc = self.spec_config
        ckpt = (load_checkpoint(sc.model, keep_quantized=self.config.quantization is not None)
                if sc.model else target_ckpt)
        if ckpt.config.vocab_size != self.model_config.vocab_size or (
                ckpt is not target_ckpt and ckpt.tokenizer.get_vocab() != self.tokenizer.get_vocab()):
            raise ValueError(f"draft model {sc.model!r} has a different vocabulary than the target "
                             f"({ckpt.config.vocab_size} vs {self.model_config.vocab_size} tokens); "
                             "a draft must share the target's tokenizer")
        cfg = ckpt.config
        if sc.draft_num_layers is not None:
            if not 1 <= sc.draft_num_layers <= cfg.num_layers:
                raise ValueError(f"draft_num_layers must be in [1, {cfg.num_layers}]")
            cfg = replace(cfg, num_layers=sc.draft_num_layers)
        draft = LlamaModel(cfg, model_len + 64, self.config.dtype, self.config.device,
                           self.config.quantization)
        draft.load_hf_weights(ckpt.weights)
        return draft

    def _make_proposer(self):
        sc = self.spec_config
        if sc is None:
            return None
        if sc.method == "ngram":
            from drafts.ngram import NgramProposer
            return NgramProposer(sc.num_speculative_tokens, sc.ngram_max, sc.ngram_min, sc.tree_width)
        if sc.method == "hybrid" and self.eagle_head is None:     # no head for this model
            from drafts.ngram import NgramProposer
            return NgramProposer(sc.num_speculative_tokens, sc.ngram_max, sc.ngram_min, 1)
        if sc.method in ("eagle", "hybrid"):
            from drafts.eagle import EagleProposer
            eagle = EagleProposer(self.eagle_head, self.model.embed_tokens, self.model.rope, self.pool.kv[-1],
                                  self.config.block_size, self.attn, self.config.device,
                                  sc.num_speculative_tokens, sc.tree_width)
            if sc.method == "eagle":
                return eagle
            from drafts.hybrid import HybridProposer
            return HybridProposer(eagle, sc.ngram_max, max(sc.ngram_min, 3))
        from drafts.draft_model import DraftModelProposer
        return DraftModelProposer(self.draft_runner, sc.num_speculative_tokens, sc.tree_width, sc.tree_topk)

    def _lookahead(self, req: Request) -> int:
        """Draft slots for `req` this step: depth x width, depth chosen by the policy against
        what the step already holds (`_plan`: tokens planned, tokens expected out)."""
        if self.proposer is None:
            return 0
        k = self.spec_config.num_speculative_tokens
        if self.policy.cost is None:         # "adaptive": False: the drafter's whole tree every step
            full = self.proposer.max_lookahead(req)
            cap = req.params.num_speculative_tokens
            return full if cap is None else min(full, cap * (full // k))
        width = self.policy.width
        if self._plan is None:               # first request of this step: one token each
            n = max(len(self.scheduler.running), 1)
            self._plan = [n, float(n)]
        depth = self.policy.depth(req.accept_ema, *self._plan)
        if depth == 0:                       # not worth it now: decode plainly, probe now and then
            req.spec_skip_steps += 1
            if req.spec_skip_steps < self.policy.probe_every * req.spec_backoff:
                return 0
            if not self.policy.probe_is_cheap(self._plan[0]):
                return 0                     # e.g. one more token would open a new int4 row block
            req.spec_skip_steps, depth = 0, 1
            req.spec_probing = True
        if req.params.num_speculative_tokens is not None:
            depth = min(depth, req.params.num_speculative_tokens)
        a = self.policy.prior_acceptance if req.accept_ema is None else req.accept_ema
        self._plan[0] += depth * width
        self._plan[1] += expected_accepted(a, depth)
        return depth * width

    def _policy_width(self) -> int:
        """Draft tokens per unit of policy depth: a chain or fixed-shape tree spends its width at
        every depth; a drafter whose budget counts nodes (EAGLE's dynamic tree keeps the best N
        nodes of its tree, a chain at worst) spends one token per unit."""
        if getattr(self.proposer, "budget_counts_nodes", False):
            return 1
        return self.proposer.max_lookahead(None) // self.spec_config.num_speculative_tokens

    def _after_verify(self, req: Request, depth: int, num_accepted: int) -> None:
        """Acceptance estimate; a failed probe doubles the wait before the next one."""
        req.accept_ema = self.policy.update(req.accept_ema, depth, num_accepted)
        if req.spec_probing:
            req.spec_backoff = 1 if num_accepted else min(2 * req.spec_backoff, self.policy.max_backoff)
            req.spec_probing = False

    def _calibrate_step_cost(self) -> None:
        """Seed the cost model: time every verify size of one request on a scratch request."""
        from specdec.scheduler import ScheduledRequest
        k = self.policy.max_depth * self.policy.width
        ctx = 64
        req = Request("__calibrate__", [0] * ctx, SamplingParams(), self.eos_token_ids)
        if not self.block_manager.allocate(req, ctx + k + 1):
            return
        try:
            prefill = SchedulerOutput([ScheduledRequest(req, ctx)])
            self.runner.forward(build_step_inputs(prefill, [None], self.config.block_size, self.config.device))
            req.num_computed_tokens = ctx - 1
            # every verify size the policy can ask for of one request (1 + depth * width), twice
            sizes = [1] + [1 + d * self.policy.width for d in range(1, self.policy.max_depth + 1)]
            for m in sizes * 2:
                tree = DraftTree.chain(0, [0] * (m - 1)) if m > 1 else DraftTree.root_only(0)
                batch = SchedulerOutput([ScheduledRequest(req, 1, tree.num_nodes - 1)])
                inputs = build_step_inputs(batch, [tree], self.config.block_size, self.config.device)
                t0 = time.perf_counter()
                self.forward(inputs)
                self.step_cost.observe(inputs.meta.num_tokens, time.perf_counter() - t0)
        finally:
            self.block_manager.free(req)

    def _on_preempt(self, req: Request) -> None:
        if self.proposer is not None:
            self.proposer.reset(req)
