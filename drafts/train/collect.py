"""Self-distillation data: the target's own greedy answers and its hidden states.

For each shard of prompts the engine (default quantized path, continuous batching) generates
greedy answers; then one prefill over prompt + answer with feature capture
(`ModelRunner.forward(..., capture_layers)`) records the residual streams entering the
EAGLE-3 layers for every position. A shard is written atomically (temp file + rename), so an
interrupted run loses at most the shard in progress and a rerun continues after the last
complete one. Prompts go to shards in a fixed order, so reruns build the same shards.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from drafts.train.data import TrainPrompt
from specdec.model_runner import causal_segment, pack_segments
from specdec.request import Request
from specdec.sampling_params import SamplingParams


def shard_path(data_dir: Path, i: int) -> Path:
    return data_dir / f"shard_{i:05d}.pt"


def write_shards(data_dir: Path, num_shards: int, minutes: float, desc: str,
                 make_shard: Callable[[int], dict]) -> int:
    """Write shards 0..num_shards-1 that do not exist yet, each atomically (tmp file + rename, so
    an interrupted run resumes where it stopped), until `minutes` pass. Returns the shard count."""
    deadline = time.monotonic() + minutes * 60
    done = sum(shard_path(data_dir, i).exists() for i in range(num_shards))
    bar = tqdm(total=num_shards, initial=done, desc=desc, unit="shard")
    for i in range(num_shards):
        path = shard_path(data_dir, i)
        if path.exists():
            continue
        if time.monotonic() > deadline:
            break
        shard = make_shard(i)
        tmp = path.with_suffix(".tmp")
        torch.save(shard, tmp)
        os.replace(tmp, path)
        bar.update(1)
        bar.set_postfix(tokens=sum(len(t) for t in shard["tokens"]))
    bar.close()
    return sum(shard_path(data_dir, i).exists() for i in range(num_shards))


def chat_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(t) for t in ids]


@torch.inference_mode()
def capture_features(engine, sequences: list[list[int]], layers: tuple[int, ...],
                     max_tokens_per_forward: int = 2048, argmax: bool = False):
    """Features [T, len(layers) * hidden] (fp16) for each whole sequence, via scratch requests.

    Each sequence is prefilled from position 0 in its own blocks (freed afterwards); several
    sequences share one forward up to `max_tokens_per_forward` tokens. With `argmax`, also
    the target's greedy next token after every position ([T] int32), as a second list.
    """
    out: list[torch.Tensor] = []
    best: list[torch.Tensor] = []
    i = 0
    while i < len(sequences):
        group, total = [], 0
        while i < len(sequences) and (not group or total + len(sequences[i]) <= max_tokens_per_forward):
            group.append(sequences[i])
            total += len(sequences[i])
            i += 1
        reqs = [Request(f"__capture{j}__", seq, SamplingParams(), engine.eos_token_ids)
                for j, seq in enumerate(group)]
        allocated = []
        try:
            for r in reqs:
                if not engine.block_manager.allocate(r, r.num_tokens):
                    raise RuntimeError("KV pool too small for feature capture; raise kv_cache_memory")
                allocated.append(r)
            segs = [causal_segment(r, 0, r.num_tokens, False) for r in reqs]
            if argmax:
                for seg in segs:
                    seg.logit_rows = list(range(len(seg.token_ids)))
            inputs = pack_segments(segs, engine.config.block_size, engine.config.device)
            logits, feats = engine.runner.forward(inputs, layers)
            start = 0
            for r in reqs:
                out.append(feats[start:start + r.num_tokens].to(torch.float16).clone())
                if argmax:
                    best.append(logits[start:start + r.num_tokens].argmax(-1).to(torch.int32))
                start += r.num_tokens
        finally:
            for r in allocated:
                engine.block_manager.free(r)
    return (out, best) if argmax else out


def collect(data_dir: Path, prompts: list[TrainPrompt], layers: tuple[int, ...], minutes: float,
            max_new_tokens: int, shard_size: int, max_prompt_tokens: int, max_shards: int | None = None) -> int:
    """Write shards until `minutes` pass (this run) or prompts run out. Returns the shard count."""
    from specdec import LLM
    data_dir.mkdir(parents=True, exist_ok=True)
    llm = LLM(max_num_seqs=shard_size, kv_cache_memory=768 * 2**20, enable_prefix_caching=False)
    eng, tok = llm.engine, llm.tokenizer
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    num_shards = len(prompts) // shard_size
    if max_shards is not None:
        num_shards = min(num_shards, max_shards)

    def make_shard(i: int) -> dict:
        batch = [chat_ids(tok, p.text) for p in prompts[i * shard_size:(i + 1) * shard_size]]
        batch = [ids for ids in batch if len(ids) <= max_prompt_tokens]
        outs = llm.generate(prompt_token_ids=batch, sampling_params=params)
        seqs = [ids + list(o.outputs[0].token_ids) for ids, o in zip(batch, outs)]
        feats = capture_features(eng, seqs, layers)
        return {"tokens": [torch.tensor(s, dtype=torch.int32) for s in seqs],
                "prompt_len": [len(ids) for ids in batch], "features": feats, "layers": list(layers)}

    return write_shards(data_dir, num_shards, minutes, "collect shards", make_shard)


def collect_prefill(data_dir: Path, convs: list[tuple[str, str]], layers: tuple[int, ...], minutes: float,
                    shard_size: int, max_tokens: int, max_shards: int | None = None) -> int:
    """Off-policy shards, 10x cheaper per token than generating: (user turn, ShareGPT answer)
    pairs prefilled in one forward, with features and the target's argmax after every position
    (the labels; trainer rows count only where the fed tokens agree with the target's argmax,
    see ttt.make_packs). Same atomic, resumable shard files as `collect`."""
    from specdec import LLM
    data_dir.mkdir(parents=True, exist_ok=True)
    llm = LLM(kv_cache_memory=768 * 2**20, enable_prefix_caching=False)
    eng, tok = llm.engine, llm.tokenizer
    num_shards = len(convs) // shard_size
    if max_shards is not None:
        num_shards = min(num_shards, max_shards)

    def make_shard(i: int) -> dict:
        seqs, plens = [], []
        for user, answer in convs[i * shard_size:(i + 1) * shard_size]:
            prompt = chat_ids(tok, user)
            if len(prompt) >= max_tokens // 2:
                continue
            full = tok.apply_chat_template([{"role": "user", "content": user},
                                            {"role": "assistant", "content": answer}], tokenize=True)
            full = [int(t) for t in (full["input_ids"] if hasattr(full, "keys") else full)]
            if full[:len(prompt)] != prompt:
                continue                      # template renders the turn differently: skip
            seqs.append(full[:max_tokens])
            plens.append(len(prompt))
        feats, best = capture_features(eng, seqs, layers, argmax=True)
        return {"tokens": [torch.tensor(s, dtype=torch.int32) for s in seqs], "prompt_len": plens,
                "features": feats, "argmax": best, "layers": list(layers)}

    return write_shards(data_dir, num_shards, minutes, "prefill shards", make_shard)
