"""Grammar-guided decoding benchmark: JSON-schema answers, with and without grammar-aware drafting.

Rows (batch 1, greedy, same prompt ids and schemas, BFCL function schemas from
tests/data/bfcl_schemas.json; each request stops at EOS or --max-tokens):
  specdec plain               grammar masks, no speculation (the reference tokens)
  specdec ngram               n-gram drafts verified under per-node grammar masks
  specdec ngram + aware       the same, plus grammar-aware drafting (rejected drafts pruned,
                              forced tokens added as drafts)
  llama.cpp                   llama-cpp-python with response_format json_schema (if installed)
Reports tau (tokens per target forward), output tok/s, e2e latency, the share
of outputs that validate, whether speculative tokens equal plain ones, and the
mean grammar CPU time per emitted token (drafting + tree masks + matcher advance).

    python -m evals.grammar_bench --num-prompts 8 --max-tokens 64 --out evals/results/<date>-grammar
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jsonschema

from evals.report import fmt, machine_info, markdown_table, output_dir, write_report

CASES_FILE = Path(__file__).resolve().parent.parent / "tests" / "data" / "bfcl_schemas.json"
NGRAM = {"method": "ngram", "num_speculative_tokens": 4}


def load_prompts(llm, n: int):
    cases = json.loads(CASES_FILE.read_text())["cases"][:n]
    out = []
    for c in cases:
        msg = f"{c['question']}\nReply with the arguments of `{c['name']}` as a JSON object."
        ids = llm.tokenizer.encode(llm.apply_chat_template([{"role": "user", "content": msg}]),
                                   add_special_tokens=False)
        out.append((c, ids, msg))
    return out


def run_specdec(llm, prompts, max_tokens: int) -> dict:
    from specdec import SamplingParams
    m = llm.engine.spec_metrics
    t_grammar, n_grammar = m.grammar_time_s, m.num_grammar_tokens
    pruned, forced = m.num_grammar_pruned, m.num_grammar_forced
    gens = []
    for case, ids, _ in prompts:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, response_format={
            "type": "json_schema", "json_schema": {"name": case["name"], "schema": case["schema"]}})
        t0 = time.perf_counter()
        (out,) = llm.generate(prompt_token_ids=[ids], sampling_params=params)
        dt = time.perf_counter() - t0
        o = out.outputs[0]
        gens.append({"id": case["id"], "tokens": o.token_ids, "text": o.text, "e2e_s": dt,
                     "tau": out.metrics.tau, "finish": o.finish_reason, "valid": is_valid(o.text, case["schema"])})
    return {"generations": gens,
            "grammar_s_per_token": (m.grammar_time_s - t_grammar) / max(1, m.num_grammar_tokens - n_grammar),
            "pruned": m.num_grammar_pruned - pruned, "forced": m.num_grammar_forced - forced}


def run_llamacpp(prompts, max_tokens: int, threads: int) -> dict:
    from llama_cpp import Llama

    from specdec.loader import bundled_model_path
    llm = Llama(model_path=bundled_model_path(), n_ctx=4096, n_threads=threads, verbose=False)
    gens = []
    for case, _, msg in prompts:
        t0 = time.perf_counter()
        r = llm.create_chat_completion(messages=[{"role": "user", "content": msg}], temperature=0.0,
                                       max_tokens=max_tokens, response_format={
                                           "type": "json_object", "schema": case["schema"]})
        dt = time.perf_counter() - t0
        text = r["choices"][0]["message"]["content"]
        n = r["usage"]["completion_tokens"]
        gens.append({"id": case["id"], "tokens": [None] * n, "text": text, "e2e_s": dt, "tau": 1.0,
                     "finish": r["choices"][0]["finish_reason"], "valid": is_valid(text, case["schema"])})
    return {"generations": gens, "grammar_s_per_token": None, "pruned": None, "forced": None}


def is_valid(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
        return True
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False


def summarize(name: str, r: dict, plain: dict | None) -> list[str]:
    g = r["generations"]
    n_tok = sum(len(x["tokens"]) for x in g)
    total_s = sum(x["e2e_s"] for x in g)
    same = "-" if plain is None or name.startswith("llama") else (
        f"{sum(a['tokens'] == b['tokens'] for a, b in zip(g, plain['generations']))}/{len(g)}")
    per_tok = r["grammar_s_per_token"]
    return [name, fmt(statistics.mean(x["tau"] for x in g), 2), fmt(n_tok / total_s, 1),
            fmt(1000 * statistics.median(x["e2e_s"] for x in g), 0),
            f"{sum(x['valid'] for x in g)}/{sum(x['finish'] == 'stop' for x in g)}/{len(g)}", same,
            "-" if per_tok is None else fmt(per_tok * 1e6, 0),
            "-" if r["pruned"] is None else str(r["pruned"]), "-" if r["forced"] is None else str(r["forced"])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    import torch

    from specdec import LLM
    if a.threads:
        torch.set_num_threads(a.threads)
    plain_llm = LLM(dtype=a.dtype, num_threads=a.threads)
    prompts = load_prompts(plain_llm, a.num_prompts)
    results: dict[str, dict] = {}
    run_specdec(plain_llm, prompts[:1], a.max_tokens)               # warm-up
    results["specdec plain"] = run_specdec(plain_llm, prompts, a.max_tokens)
    del plain_llm
    spec_llm = LLM(dtype=a.dtype, speculative_config=NGRAM, num_threads=a.threads)
    run_specdec(spec_llm, prompts[:1], a.max_tokens)
    spec_llm.engine.grammar.aware_drafting = False
    results["specdec ngram"] = run_specdec(spec_llm, prompts, a.max_tokens)
    spec_llm.engine.grammar.aware_drafting = True
    results["specdec ngram + grammar-aware drafting"] = run_specdec(spec_llm, prompts, a.max_tokens)
    notes = []
    try:
        results["llama.cpp (json_schema)"] = run_llamacpp(prompts, a.max_tokens, a.threads or torch.get_num_threads())
    except ImportError as e:
        notes.append(f"llama.cpp row skipped: llama-cpp-python is not installed ({e}); "
                     "install it with `bash evals/install_llamacpp.sh` to add the row")
    plain = results["specdec plain"]
    headers = ["system", "tau", "tok/s", "e2e p50 ms", "valid/stopped/all", "tokens == plain",
               "grammar us/token", "pruned drafts", "forced drafts"]
    rows = [summarize(name, r, plain) for name, r in results.items()]
    table = markdown_table(headers, rows)
    print(table)
    notes += ["tau = emitted tokens per target forward (mean over requests); tok/s = all output tokens / "
              "all e2e time; valid = finished outputs that parse and validate with jsonschema",
              "grammar us/token = CPU time in grammar-aware drafting + per-node tree masks + matcher "
              "advance, per emitted token",
              f"command: python -m evals.grammar_bench --num-prompts {a.num_prompts} --max-tokens "
              f"{a.max_tokens} --dtype {a.dtype}" + (f" --threads {a.threads}" if a.threads else "")]
    out = output_dir(a.out)
    machine = machine_info({"dtype": a.dtype, "num_prompts": a.num_prompts, "max_tokens": a.max_tokens,
                            "threads": a.threads or torch.get_num_threads()})
    write_report(out, "grammar", "Grammar-guided decoding: JSON-schema answers (BFCL schemas)", machine,
                 [("Batch 1, greedy", table)], notes, {"results": results}, [])
    print(f"wrote {out}/grammar.md")
    bad = any(r[5] not in ("-", f"{len(prompts)}/{len(prompts)}") for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
