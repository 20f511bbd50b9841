"""Property-based fuzzing of the public API: SamplingParams, LLM.generate, LLM.chat.

Every case is a mix of valid and hostile values (NaN / inf, bools where ints
belong, 70-bit seeds, lone surrogates, junk message shapes, ...). The property:
a case either raises ValueError / TypeError with a message that names what was
wrong, or returns finished outputs (finish "stop" or "length", at most
max_tokens tokens); afterwards the engine is idle with every block free, a
fixed probe request returns exactly the tokens it returned on the fresh
engine, and the per-step invariant check (specdec/invariants.py) never fired.

    python -m evals.fuzz --cases 20000          # the long run; prints count, rate, outcomes

tests/test_fuzz.py runs a few hundred cases of the same strategies in CI.
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import sys
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdec import SamplingParams

PROBE_PROMPT = "The capital of France is"
PROBE_PARAMS = dict(temperature=0.0, max_tokens=3, ignore_eos=True)
MAX_TOKENS = 4

# names a rejection message may cite: the fields and inputs the API takes
KNOWN_NAMES = ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
               "frequency_penalty", "presence_penalty", "logit_bias", "seed", "stop", "stop_token_ids",
               "ignore_eos", "include_stop_str_in_output", "logprobs", "num_speculative_tokens", "n ",
               "n must", "prompt", "prompts", "prompt_token_ids", "messages", "sampling_params",
               "context limit", "add_generation_prompt")

# ---- strategies -------------------------------------------------------------------------------

HOSTILE_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e-320, 1e308, -0.0, 2**64, -1]),
)
HOSTILE = st.one_of(HOSTILE_SCALAR, st.lists(st.integers(-3, 5), max_size=2),
                    st.dictionaries(st.integers(0, 3), st.integers(0, 3), max_size=2))
WEIRD_CHARS = st.sampled_from(["\ud800", "\udfff", "\x00", "\ufffd", "\U0001f600", "\n", "\u200b", "é"])
TEXT = st.one_of(st.text(max_size=12), st.text(max_size=12),
                 st.lists(st.one_of(st.characters(), WEIRD_CHARS), max_size=12).map("".join))
VOCAB_EDGE = 49152            # the bundled model's vocabulary size


def _token_id() -> st.SearchStrategy:
    return st.one_of(st.integers(0, 3000), st.integers(VOCAB_EDGE - 2, VOCAB_EDGE + 1), st.integers(-2, -1))


def _mostly(valid: st.SearchStrategy, *edges) -> st.SearchStrategy:
    """In-range values, and now and then a value at or just past the edge of the range."""
    return st.one_of(*[valid] * 8, st.sampled_from(edges))


# typed values: mostly in range, sometimes at or just outside the edges
FIELDS = {
    "temperature": _mostly(st.one_of(st.just(0.0), st.floats(1e-5, 3.0)), 1e-6, 1e-5, -0.0, -1.0, 1e9),
    "top_k": _mostly(st.integers(-1, 100), -2, 0, VOCAB_EDGE, 10**9),
    "top_p": _mostly(st.floats(0.01, 1.0), 0.0, 1e-300, 1.0000001),
    "min_p": _mostly(st.floats(0.0, 1.0), -1e-9, 1.5),
    "repetition_penalty": _mostly(st.floats(0.5, 2.0), 0.0, 0.01, 100.0, 100.5),
    "frequency_penalty": _mostly(st.floats(-2.0, 2.0), -2.5, 2.0, 2.5),
    "presence_penalty": _mostly(st.floats(-2.0, 2.0), -2.0, 2.01),
    "logit_bias": _mostly(st.dictionaries(st.integers(0, 3000), st.floats(-100, 100), max_size=4),
                          {VOCAB_EDGE: 1.0}, {VOCAB_EDGE - 1: 100.0}, {5: 100.5}, {-1: 0.0}),
    "seed": _mostly(st.integers(0, 2**64 - 1), -1, 2**64, 2**64 - 1),
    "stop": _mostly(st.one_of(TEXT.filter(bool), st.lists(TEXT.filter(bool), max_size=3)), "", [""], "\ud800"),
    "stop_token_ids": _mostly(st.lists(st.integers(0, 3000), max_size=3), [VOCAB_EDGE], [-1], [VOCAB_EDGE - 1]),
    "ignore_eos": st.booleans(),
    "include_stop_str_in_output": st.booleans(),
    "logprobs": _mostly(st.one_of(st.none(), st.integers(0, 20)), -1, 21),
    "n": _mostly(st.just(1), 0, 2),
    "num_speculative_tokens": _mostly(st.one_of(st.none(), st.integers(0, 16)), -1, 17),
}
# hostile values per field: wrong types, non-finite numbers, hostile contents
HOSTILE_FIELDS = {
    **{name: HOSTILE for name in FIELDS},
    "logit_bias": st.one_of(HOSTILE, st.dictionaries(st.one_of(_token_id(), HOSTILE_SCALAR),
                                                     st.one_of(st.floats(-150, 150), HOSTILE), max_size=3)),
    "stop": st.one_of(HOSTILE, st.lists(st.one_of(TEXT, HOSTILE), max_size=3),
                      st.lists(st.just("x"), min_size=65, max_size=66), st.just("y" * 1025)),
    "stop_token_ids": st.one_of(HOSTILE, st.lists(st.one_of(_token_id(), HOSTILE_SCALAR), max_size=3)),
}


@st.composite
def sampling_kwargs(draw) -> dict:
    """max_tokens (1-4 when valid: None, until the context fills, is too slow) plus a few other
    fields; usually every value is of the right type, sometimes one of them is hostile."""
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=6))
    bad = draw(st.one_of(*[st.none()] * 4, st.sampled_from(names + ["max_tokens"])))
    kw = {"max_tokens": draw(st.integers(1, MAX_TOKENS) if bad != "max_tokens" else
                             st.one_of(HOSTILE, st.sampled_from([0, -1, True, 2.0, "3", None])))}
    if kw["max_tokens"] is None:
        kw["max_tokens"] = 0
    for name in names:
        kw[name] = draw(HOSTILE_FIELDS[name] if name == bad else FIELDS[name])
    return kw


def token_ids() -> st.SearchStrategy:
    ids = st.lists(st.integers(0, 3000), min_size=1, max_size=10)
    hostile = st.lists(st.one_of(_token_id(), HOSTILE_SCALAR), max_size=10)
    return st.one_of(ids, ids, ids, hostile, HOSTILE)


def _message(hostile: bool) -> st.SearchStrategy:
    text_part = st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})
    tool_call = st.fixed_dictionaries(
        {"id": st.just("call_1"), "type": st.just("function"),
         "function": st.fixed_dictionaries({"name": st.just("get_weather"),
                                            "arguments": st.sampled_from(['{"city": "Paris"}', "{}", ""])})})
    if not hostile:
        role = st.sampled_from(["system", "user", "user", "assistant", "developer"])
        plain = st.fixed_dictionaries({"role": role, "content": st.one_of(TEXT, st.lists(text_part, max_size=2))})
        assistant_call = st.fixed_dictionaries({"role": st.just("assistant"), "content": st.none(),
                                                "tool_calls": st.lists(tool_call, min_size=1, max_size=2)})
        tool = st.fixed_dictionaries({"role": st.just("tool"), "content": TEXT, "tool_call_id": st.just("call_1")})
        return st.one_of(plain, plain, plain, assistant_call, tool)
    part = st.one_of(text_part, st.fixed_dictionaries({"type": st.sampled_from(["image_url", "text", 3]),
                                                       "text": st.one_of(TEXT, HOSTILE)}), HOSTILE)
    bad_call = st.fixed_dictionaries(
        {"id": st.one_of(st.just("call_1"), HOSTILE), "type": st.sampled_from(["function", "x"]),
         "function": st.one_of(st.fixed_dictionaries(
             {"name": st.one_of(st.just("get_weather"), TEXT, HOSTILE),
              "arguments": st.one_of(TEXT, HOSTILE, st.dictionaries(st.text(max_size=3), HOSTILE, max_size=2))}),
             HOSTILE)})
    message = st.fixed_dictionaries(
        {"role": st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "bot", "", "USER"]), HOSTILE),
         "content": st.one_of(st.none(), TEXT, st.lists(part, max_size=3), HOSTILE)},
        optional={"tool_calls": st.one_of(st.lists(bad_call, max_size=2), HOSTILE),
                  "tool_call_id": st.one_of(st.just("call_1"), HOSTILE),
                  "name": st.one_of(st.just("alice"), HOSTILE)})
    return st.one_of(message, HOSTILE)


def conversation() -> st.SearchStrategy:
    good = st.lists(_message(False), min_size=1, max_size=4)
    mixed = st.lists(st.one_of(_message(False), _message(True)), max_size=4)
    return st.one_of(good, good, mixed, HOSTILE)


def cases() -> st.SearchStrategy[tuple]:
    """("params", kwargs) | ("generate", prompts, ids, kwargs) | ("chat", messages, kwargs)."""
    prompts = st.one_of(TEXT, TEXT, st.lists(TEXT, min_size=1, max_size=3), HOSTILE)
    return st.one_of(
        st.tuples(st.just("params"), sampling_kwargs()),
        st.tuples(st.just("generate"), prompts, st.none(), sampling_kwargs()),
        st.tuples(st.just("generate"), st.none(), st.lists(token_ids(), min_size=1, max_size=3),
                  sampling_kwargs()),
        st.tuples(st.just("generate"), st.one_of(prompts, st.none()),           # both, or neither
                  st.one_of(st.none(), st.lists(token_ids(), max_size=3)), sampling_kwargs()),
        st.tuples(st.just("chat"), conversation(), sampling_kwargs()),
    )


# ---- the property ---------------------------------------------------------------------------------

class Fuzzer:
    """One shared LLM (n-gram speculation on, invariants checked every step) and its probe."""

    def __init__(self, llm=None):
        if llm is None:
            from specdec import LLM
            llm = LLM(speculative_config={"method": "ngram", "num_speculative_tokens": 3},
                      check_invariants=True, max_model_len=256)
        self.llm = llm
        self.probe_tokens = self.probe()
        self.outcomes: collections.Counter[str] = collections.Counter()

    def probe(self) -> list[int]:
        (out,) = self.llm.generate(PROBE_PROMPT, SamplingParams(**PROBE_PARAMS))
        return out.outputs[0].token_ids

    def run(self, case: tuple) -> str:
        """Run one case, check the property, return its outcome ("rejected:<stage>" or "ran")."""
        outcome = self._run_case(case)
        self.outcomes[outcome] += 1
        engine = self.llm.engine
        assert not engine.requests and not engine.has_unfinished_requests(), "engine not idle after a case"
        bm = engine.block_manager
        assert bm.num_free_blocks == bm.num_blocks, f"{bm.num_blocks - bm.num_free_blocks} blocks leaked"
        assert self.probe() == self.probe_tokens, "probe tokens changed after a case"
        return outcome

    def _run_case(self, case: tuple) -> str:
        kind, *args = case
        try:
            params = SamplingParams(**args[-1])
        except (ValueError, TypeError) as e:
            _check_message(e)
            if os.environ.get("FUZZ_VERBOSE"):
                print(f"rejected params: {e}", file=sys.stderr)
            return "rejected:params"
        if kind == "params":
            _check_params(params)
            return "accepted:params"
        try:
            if kind == "generate":
                prompts, ids = args[0], args[1]
                if prompts is None and ids is None:
                    prompts = "Hi"
                outs = self.llm.generate(prompts, params, prompt_token_ids=ids)
            else:
                outs = self.llm.chat(args[0], params)
        except (ValueError, TypeError) as e:
            _check_message(e)
            if os.environ.get("FUZZ_VERBOSE"):
                print(f"rejected {kind}: {e}", file=sys.stderr)
            return f"rejected:{kind}"
        for out in outs:
            c = out.outputs[0]
            assert out.finished and c.finish_reason in ("stop", "length"), (c.finish_reason, c.error)
            assert 1 <= len(c.token_ids) <= params.max_tokens and isinstance(c.text, str)
        return f"ran:{kind}"


def _check_message(e: Exception) -> None:
    msg = str(e)
    assert msg and len(msg) < 1000, f"unhelpful message {msg!r}"
    assert any(name in msg for name in KNOWN_NAMES), f"message names no field: {msg!r}"


def _check_params(p: SamplingParams) -> None:
    """An accepted SamplingParams holds only values the engine can use."""
    for name in ("temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty",
                 "presence_penalty"):
        v = getattr(p, name)
        assert type(v) is float and math.isfinite(v), (name, v)
    assert all(type(k) is int and k >= 0 and math.isfinite(v) for k, v in (p.logit_bias or {}).items())
    assert p.seed is None or (type(p.seed) is int and 0 <= p.seed < 2**64)
    assert all(isinstance(s, str) and s for s in p.stop)
    assert all(type(t) is int and t >= 0 for t in p.stop_token_ids)


FUZZ_SETTINGS = dict(deadline=None, database=None, print_blob=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.filter_too_much])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=20_000, help="hypothesis examples to run")
    ap.add_argument("--seed", type=int, default=0, help="hypothesis seed (runs are reproducible)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="stop after the chunk that crosses this wall time (reports what ran)")
    ap.add_argument("--chunk", type=int, default=500, help="cases per hypothesis run (one seed each)")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from hypothesis import seed as hyp_seed

    fuzzer = Fuzzer()
    t0 = time.monotonic()
    done, chunk_seed = 0, args.seed
    while done < args.cases:
        size = min(args.chunk, args.cases - done)

        @hyp_seed(chunk_seed)
        @settings(max_examples=size, **FUZZ_SETTINGS)
        @given(case=cases())
        def run(case):
            fuzzer.run(case)
        run()
        done += size
        chunk_seed += 1
        n, elapsed = sum(fuzzer.outcomes.values()), time.monotonic() - t0
        print(f"  {n} cases, {elapsed:.0f} s, {n / elapsed:.1f}/s", file=sys.stderr, flush=True)
        if args.max_seconds is not None and elapsed > args.max_seconds:
            break
    elapsed = time.monotonic() - t0
    n = sum(fuzzer.outcomes.values())
    print(f"{n} cases in {elapsed:.0f} s ({n / elapsed:.1f} cases/s), property held in all "
          f"(seeds {args.seed}..{chunk_seed - 1}, {args.chunk} per seed)")
    for outcome, count in sorted(fuzzer.outcomes.items()):
        print(f"  {outcome:20s} {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
