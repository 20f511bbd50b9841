"""`specdec` command line: serve the OpenAI-compatible API, generate once, or chat interactively."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from specdec.sampling_params import SamplingParams


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="HF folder or .gguf file (default: bundled SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 | auto (default: fastest here)")
    p.add_argument("--speculative-config", default=None, type=json.loads,
                   help='JSON, e.g. \'{"method": "ngram", "num_speculative_tokens": 4}\'')


def default_speculative_config() -> dict:
    """The speculator `specdec serve` uses when none is given: the engine's default (one source of truth)."""
    from specdec.speculative import DEFAULT_SPECULATIVE_CONFIG
    return dict(DEFAULT_SPECULATIVE_CONFIG)


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_path", nargs="?", default=None, metavar="MODEL",
                   help="HF folder or .gguf file (default: bundled SmolLM2-135M-Instruct)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("SPECDEC_API_KEY"),
                   help="require `Authorization: Bearer KEY` (default: $SPECDEC_API_KEY, else none)")
    p.add_argument("--served-model-name", default=None, help="the `model` clients send (default: file name)")
    p.add_argument("--no-speculation", action="store_true", help="plain decoding (ignore --speculative-config)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="requests in the running batch")
    p.add_argument("--max-num-batched-tokens", type=int, default=512, help="token budget per step")
    p.add_argument("--max-model-len", type=int, default=None, help="context limit (default: the model's)")
    p.add_argument("--kv-cache-memory-mb", type=int, default=512, help="KV pool size in MiB")
    p.add_argument("--seed", type=int, default=0, help="engine seed for requests without one")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="SIGTERM: seconds in-flight requests may take to finish before they are aborted")
    p.add_argument("--max-pending-requests", type=int, default=256,
                   help="engine requests queued or running before new ones get 503")
    p.add_argument("--max-tokens-limit", type=int, default=None, help="cap on max_tokens (default: context)")
    p.add_argument("--default-max-tokens", type=int, default=None,
                   help="max_tokens when a request gives none (default: the rest of the context)")
    p.add_argument("--max-n", type=int, default=8, help="choices per request")
    p.add_argument("--max-body-bytes", type=int, default=4 * 2**20, help="larger request bodies get 413")
    p.add_argument("--reasoning-parser", default=None, choices=["deepseek_r1", "qwen3"],
                   help="chat: text up to </think> goes to reasoning_content (a request may override it)")
    p.add_argument("--tool-call-parser", default=None, choices=["hermes", "llama3"],
                   help="tool-call format (default: read from the model's chat template, else hermes)")
    p.add_argument("--log-level", default="info")


def cmd_serve(a) -> int:
    from server.launcher import serve
    from server.settings import ServerSettings
    from specdec.config import EngineConfig
    from specdec.engine import LLMEngine
    from specdec.loader import bundled_model_path

    model = a.model_path or a.model
    spec = None if a.no_speculation else (a.speculative_config or default_speculative_config())
    name = a.served_model_name or (os.path.splitext(os.path.basename(os.path.normpath(model)))[0]
                                   if model else "SmolLM2-135M-Instruct")
    settings = ServerSettings(served_model_name=name, api_key=a.api_key, max_body_bytes=a.max_body_bytes,
                              max_tokens_limit=a.max_tokens_limit, default_max_tokens=a.default_max_tokens,
                              max_n=a.max_n, max_pending_requests=a.max_pending_requests,
                              shutdown_timeout=a.shutdown_timeout, reasoning_parser=a.reasoning_parser,
                              tool_call_parser=a.tool_call_parser)
    config = EngineConfig(model=model or bundled_model_path(), dtype=a.dtype, speculative_config=spec,
                          max_num_seqs=a.max_num_seqs, max_num_batched_tokens=a.max_num_batched_tokens,
                          max_model_len=a.max_model_len, kv_cache_memory=a.kv_cache_memory_mb * 2**20,
                          seed=a.seed)
    engine = LLMEngine(config)
    print(f"specdec: serving {name} on http://{a.host}:{a.port}/v1 (speculation: {spec})", file=sys.stderr)
    serve(engine, settings, a.host, a.port, a.log_level)
    return 0


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=-1)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json-schema", default=None, metavar="FILE",
                   help="constrain the answer to this JSON schema (a .json file)")
    g.add_argument("--regex", default=None, help="constrain the answer to this regular expression")


def _params(a) -> SamplingParams:
    response_format = None
    if a.json_schema is not None:
        with open(a.json_schema) as f:
            try:
                schema = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"--json-schema {a.json_schema}: not valid JSON: {e}") from None
        response_format = {"type": "json_schema", "json_schema": {"name": "cli", "schema": schema}}
    return SamplingParams(max_tokens=a.max_tokens, temperature=a.temperature, top_p=a.top_p,
                          top_k=a.top_k, min_p=a.min_p, repetition_penalty=a.repetition_penalty,
                          seed=a.seed, stop=a.stop, response_format=response_format, regex=a.regex)


def _load(a):
    from specdec.llm import LLM
    return LLM(model=a.model, dtype=a.dtype, speculative_config=a.speculative_config)


def stream(llm, token_ids: list[int], params: SamplingParams, out=sys.stdout):
    """Run one request, writing text deltas as they are produced. Returns the final output."""
    engine = llm.engine
    rid = engine.add_request(None, token_ids, params)
    final = None
    while final is None:
        for o in engine.step():
            if o.request_id == rid:
                out.write(o.outputs[0].delta_text)
                out.flush()
                if o.finished:
                    final = o
    return final


def cmd_generate(a) -> int:
    params = _params(a)          # bad sampling arguments fail before the model loads
    llm = _load(a)
    llm.engine.prepare_grammar(params)
    ids = llm.tokenizer.encode(a.prompt) if a.raw else llm.tokenizer.encode(
        llm.apply_chat_template([{"role": "user", "content": a.prompt}]), add_special_tokens=False)
    t0 = time.monotonic()
    final = stream(llm, ids, params)
    dt = time.monotonic() - t0
    n = len(final.outputs[0].token_ids)
    print(f"\n[{n} tokens in {dt:.2f}s, {n / dt:.1f} tok/s, tau {final.metrics.tau:.2f}]", file=sys.stderr)
    return 0


def cmd_chat(a) -> int:
    params = _params(a)
    llm = _load(a)
    history: list[dict] = [{"role": "system", "content": a.system}] if a.system else []
    print("specdec chat: empty line or Ctrl-D to quit, /reset to clear history", file=sys.stderr)
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            break
        if not line:
            break
        if line == "/reset":
            history = history[:1] if a.system else []
            continue
        history.append({"role": "user", "content": line})
        ids = llm.tokenizer.encode(llm.apply_chat_template(history), add_special_tokens=False)
        final = stream(llm, ids, params)
        print()
        history.append({"role": "assistant", "content": final.outputs[0].text})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="specdec", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the OpenAI-compatible API (see docs/serving.md)")
    _add_serve_args(s)
    _add_engine_args(s)
    g = sub.add_parser("generate", help="generate a reply to one prompt")
    g.add_argument("prompt")
    g.add_argument("--raw", action="store_true", help="no chat template: continue the text")
    c = sub.add_parser("chat", help="interactive chat, streamed")
    c.add_argument("--system", default=None, help="system prompt")
    for p in (g, c):
        _add_engine_args(p)
        _add_sampling_args(p)
    a = parser.parse_args(argv)
    try:
        return {"generate": cmd_generate, "chat": cmd_chat, "serve": cmd_serve}[a.cmd](a)
    except (ValueError, FileNotFoundError) as e:
        print(f"specdec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
