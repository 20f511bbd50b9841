"""Arguments and setup shared by `python -m evals.latency / acceptance / batch_sweep`."""
from __future__ import annotations

import argparse
import os

import torch

from evals import datasets
from evals.harness import log
from evals.model_files import load_hf_tokenizer, resolve_model
from evals.systems import Settings


def parser(description: str, quick: tuple[int, int], full: tuple[int, int]) -> argparse.ArgumentParser:
    """quick / full: (prompts per workload, max tokens) defaults."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help=f"{quick[0]} prompts x {quick[1]} tokens per workload "
                        f"(default {full[0]} x {full[1]})")
    p.add_argument("--num-prompts", type=int, help="prompts per workload (overrides --quick)")
    p.add_argument("--max-tokens", type=int, help="output tokens per request (overrides --quick)")
    p.add_argument("--workloads", nargs="+", default=list(datasets.WORKLOADS), choices=datasets.WORKLOADS)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weights/activations for specdec and HF (llama.cpp always runs the GGUF's Q4_1)")
    p.add_argument("--model", help="GGUF file or HF folder (default: bundled SmolLM2-135M-Instruct)")
    p.add_argument("--draft-model", help="GGUF file or HF folder for draft-model rows (none is bundled)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="CPU threads for every system (1 on a shared machine, see README)")
    p.add_argument("--out", help="results folder (default evals/results/<date>-<host>)")
    p.set_defaults(_quick=quick, _full=full)
    return p


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    args.loadavg_at_start = round(os.getloadavg()[0], 2)
    n, t = args._quick if args.quick else args._full
    args.num_prompts = args.num_prompts or n
    args.max_tokens = args.max_tokens or t
    torch.set_num_threads(args.threads)
    return args


def settings(args: argparse.Namespace) -> Settings:
    return Settings(files=resolve_model(args.model), dtype=args.dtype, draft_model=args.draft_model,
                    num_threads=args.threads, temperature=getattr(args, "temperature", 0.0))


def prompt_sets(args: argparse.Namespace, files) -> tuple[object, dict[str, list[list[int]]],
                                                          dict[str, list[str]]]:
    """(tokenizer, workload -> prompt ids, workload -> prompt names); one tokenization for every system."""
    log("loading tokenizer")
    tokenizer = load_hf_tokenizer(files)
    ids, names = {}, {}
    for w in args.workloads:
        prompts = datasets.load_prompts(w, args.num_prompts)
        ids[w] = [datasets.chat_token_ids(tokenizer, p) for p in prompts]
        names[w] = [p.name for p in prompts]
    return tokenizer, ids, names


def run_settings(args: argparse.Namespace, ignore_eos: bool) -> dict:
    """The settings recorded beside the numbers."""
    s = settings(args)
    return {"model": str(s.files.path), "draft_model": args.draft_model, "dtype": args.dtype,
            "threads": args.threads, "prompts_per_workload": args.num_prompts,
            "max_tokens": args.max_tokens, "ignore_eos": ignore_eos,
            "decoding": "greedy" if s.temperature == 0 else f"sampled, temperature {s.temperature}, seeded",
            "workloads": args.workloads, "loadavg_1m_at_start": args.loadavg_at_start}
