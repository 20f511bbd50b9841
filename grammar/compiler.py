"""GrammarCache: GrammarSpec -> xgrammar CompiledGrammar, compiled once, off the engine's step.

Compiling a JSON schema takes milliseconds to seconds. `submit()` starts the
compile on a background thread and returns a Future at once, so `add_request`
never stalls other requests' steps: the engine holds the request back until
its grammar is ready (see LLMEngine.admit_compiled). `compile()` is the
blocking form for callers that want the 400-style error before queueing (the
offline LLM API, the server's validation). Results (and failures) are cached by
the spec's canonical key, LRU-bounded; `num_compiles` counts real compiles.

The token bitmask is as wide as the MODEL's vocabulary, which may exceed the
tokenizer's (padded embedding rows): TokenizerInfo is built with the model's
vocab size so the padding ids are always masked out.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import xgrammar as xgr
from xgrammar.structural_tag import (AnyTextFormat, ConstStringFormat, OptionalFormat,
                                     SequenceFormat, StructuralTag, TagFormat)

from grammar.spec import GrammarSpec

COMPILE_TIMEOUT_S = 10.0     # a grammar that takes longer is refused (ValueError)
CACHE_ENTRIES = 256          # compiled grammars kept (LRU)
THINK_START, THINK_END = "<think>", "</think>"


def reasoning_prefix() -> xgr.Grammar:
    """Free text (no grammar) up to and including `</think>`; `<think>` at the start is optional
    because chat templates often open the block in the prompt."""
    tag = StructuralTag(format=SequenceFormat(elements=[
        OptionalFormat(content=ConstStringFormat(value=THINK_START)),
        TagFormat(begin="", content=AnyTextFormat(excludes=[THINK_START, THINK_END]), end=THINK_END),
    ]))
    return xgr.Grammar.from_structural_tag(tag)


def build_grammar(spec: GrammarSpec) -> xgr.Grammar:
    """The uncompiled grammar of a spec. Raises RuntimeError / ValueError from xgrammar if invalid.

    JSON is generated without free whitespace (separators ", " and ": "): a small
    model constrained to "any whitespace" can loop on newlines forever, and fixed
    separators make the structure forced, so jump-forward drafts cover more of it.
    """
    if spec.kind == "json_object":
        g = xgr.Grammar.from_json_schema('{"type": "object"}', any_whitespace=False, strict_mode=False)
    elif spec.kind == "json_schema":
        g = xgr.Grammar.from_json_schema(spec.source, any_whitespace=False, strict_mode=True)
    elif spec.kind == "regex":
        g = xgr.Grammar.from_regex(spec.source)
    elif spec.kind == "ebnf":
        g = xgr.Grammar.from_ebnf(spec.source)
    elif spec.kind == "structural_tag":
        g = xgr.Grammar.from_structural_tag(json.loads(spec.source))
    else:
        raise ValueError(f"unknown grammar kind {spec.kind!r}")
    if spec.reasoning is not None:
        g = xgr.Grammar.concat(reasoning_prefix(), g)
    return g


class GrammarCache:
    """Compiles GrammarSpecs for one tokenizer / vocabulary and caches the results.

    Parameters
    ----------
    tokenizer : a Hugging Face tokenizer (the engine's)
    vocab_size : int
        The model's vocabulary (logits width); >= the tokenizer's.
    """

    def __init__(self, tokenizer, vocab_size: int, timeout_s: float = COMPILE_TIMEOUT_S):
        self.vocab_size = vocab_size
        self.timeout_s = timeout_s
        self.tokenizer_info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        # xgrammar's own cache is off: ours is keyed by the canonical spec and also remembers failures
        self.compiler = xgr.GrammarCompiler(self.tokenizer_info, max_threads=1, cache_enabled=False)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-compile")
        self.num_compiles = 0                       # grammars actually compiled (cache misses)
        self._cache: OrderedDict[tuple, Future] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, spec: GrammarSpec) -> Future:
        """Start compiling `spec` (or return the cached Future). Does not block.

        The Future resolves to an xgrammar CompiledGrammar, or raises ValueError
        with the reason the grammar does not compile.
        """
        with self._lock:
            fut = self._cache.get(spec.key)
            if fut is not None:
                self._cache.move_to_end(spec.key)
                return fut
            fut = self.executor.submit(self._compile, spec)
            self._cache[spec.key] = fut
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
            return fut

    def compile(self, spec: GrammarSpec):
        """Blocking compile with the timeout. Returns the CompiledGrammar; raises ValueError."""
        return result_or_raise(self.submit(spec), self.timeout_s)

    def _compile(self, spec: GrammarSpec):
        self.num_compiles += 1
        try:
            return self.compiler.compile_grammar(build_grammar(spec))
        except (RuntimeError, ValueError, TypeError) as e:
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            # xgrammar prefixes "[time] /path/file.cc:line: "; keep the human part
            reason = reason.split(": ", 1)[-1] if reason.startswith("[") else reason
            raise ValueError(f"{_field(spec)} does not compile: {reason}") from None


def result_or_raise(fut: Future, timeout_s: float | None):
    """The Future's CompiledGrammar; a compile error or a timeout becomes ValueError."""
    try:
        return fut.result(timeout=timeout_s)
    except FutureTimeout:
        raise ValueError(f"grammar took longer than {timeout_s:.0f}s to compile; simplify the schema") from None


def _field(spec: GrammarSpec) -> str:
    return {"json_schema": "response_format.json_schema.schema", "json_object": "response_format",
            "regex": "regex", "ebnf": "ebnf", "structural_tag": "structural_tag"}[spec.kind]
