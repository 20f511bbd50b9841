"""End-to-end truths of grammar-guided speculative decoding on the bundled SmolLM2.

64 JSON schemas from real function specs (BFCL, tests/data/bfcl_schemas.json),
one batched generate each for plain and n-gram speculative greedy decoding (default config):
every finished output validates against its schema, and the speculative token
ids equal the plain ones. Forced (jump-forward) drafts must have been used.
"""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from specdec import LLM, SamplingParams

CASES = json.loads((Path(__file__).parent / "data" / "bfcl_schemas.json").read_text())["cases"]
MAX_TOKENS = 64
NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "adaptive": False}  # always draft


def prompts_and_params(llm: LLM) -> tuple[list[list[int]], list[SamplingParams]]:
    ids, params = [], []
    for case in CASES:
        msg = f"{case['question']}\nReply with the arguments of `{case['name']}` as a JSON object."
        text = llm.apply_chat_template([{"role": "user", "content": msg}])
        ids.append(llm.tokenizer.encode(text, add_special_tokens=False))
        params.append(SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, response_format={
            "type": "json_schema", "json_schema": {"name": case["name"], "schema": case["schema"], "strict": True}}))
    return ids, params


def check_schemas_and_spec_equals_plain(plain_llm: LLM, spec_llm: LLM) -> None:
    ids, params = prompts_and_params(plain_llm)
    plain = plain_llm.generate(prompt_token_ids=ids, sampling_params=params)
    spec = spec_llm.generate(prompt_token_ids=ids, sampling_params=params)
    finished = 0
    for case, p, s in zip(CASES, plain, spec):
        out = s.outputs[0]
        if out.finish_reason == "stop":
            finished += 1
            jsonschema.validate(json.loads(out.text), case["schema"])   # raises on a violation
        assert out.finish_reason in ("stop", "length"), out
    assert finished >= len(CASES) // 2, f"only {finished}/{len(CASES)} finished within {MAX_TOKENS} tokens"
    mismatched = [c["id"] for c, p, s in zip(CASES, plain, spec)
                  if p.outputs[0].token_ids != s.outputs[0].token_ids]
    assert not mismatched, f"speculative != plain for {mismatched}"
    m = spec_llm.engine.spec_metrics
    assert m.num_grammar_forced > 0 and m.num_accepted > 0


def test_bfcl_schemas_validate_and_speculation_equals_plain_default_config():
    """Default configuration (quantized weights, row-invariant verify). A step budget that
    prefills all 64 prompts at once makes both runs chunk their prompts identically."""
    assert len(CASES) >= 50
    kw = dict(max_num_batched_tokens=16384)
    check_schemas_and_spec_equals_plain(LLM(**kw), LLM(speculative_config=NGRAM, **kw))
