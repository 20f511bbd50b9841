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

import torch
from tqdm import tqdm

from drafts.train.data import TrainPrompt
from specdec.model_runner import causal_segment, pack_segments
from specdec.request import Request
from specdec.sampling_params import SamplingParams


def shard_path(data_dir: Path, i: int) -> Path:
    return data_dir / f"shard_{i:05d}.pt"


def chat_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(t) for t in ids]


@torch.inference_mode()
def capture_features(engine, sequences: list[list[int]], layers: tuple[int, ...],
                     max_tokens_per_forward: int = 2048) -> list[torch.Tensor]:
    """Features [T, len(layers) * hidden] (fp16) for each whole sequence, via scratch requests.

    Each sequence is prefilled from position 0 in its own blocks (freed afterwards); several
    sequences share one forward up to `max_tokens_per_forward` tokens.
    """
    out: list[torch.Tensor] = []
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
            inputs = pack_segments(segs, engine.config.block_size, engine.config.device)
            _, feats = engine.runner.forward(inputs, layers)
            start = 0
            for r in reqs:
                out.append(feats[start:start + r.num_tokens].to(torch.float16).clone())
                start += r.num_tokens
        finally:
            for r in allocated:
                engine.block_manager.free(r)
    return out


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
    deadline = time.monotonic() + minutes * 60
    done = sum(shard_path(data_dir, i).exists() for i in range(num_shards))
    bar = tqdm(total=num_shards, initial=done, desc="collect shards", unit="shard")
    for i in range(num_shards):
        path = shard_path(data_dir, i)
        if path.exists():
            continue
        if time.monotonic() > deadline:
            break
        batch = [chat_ids(tok, p.text) for p in prompts[i * shard_size:(i + 1) * shard_size]]
        batch = [ids for ids in batch if len(ids) <= max_prompt_tokens]
        outs = llm.generate(prompt_token_ids=batch, sampling_params=params)
        seqs = [ids + list(o.outputs[0].token_ids) for ids, o in zip(batch, outs)]
        feats = capture_features(eng, seqs, layers)
        tmp = path.with_suffix(".tmp")
        torch.save({"tokens": [torch.tensor(s, dtype=torch.int32) for s in seqs],
                    "prompt_len": [len(ids) for ids in batch], "features": feats, "layers": list(layers)}, tmp)
        os.replace(tmp, path)
        bar.update(1)
        bar.set_postfix(tokens=sum(len(s) for s in seqs))
    bar.close()
    return sum(shard_path(data_dir, i).exists() for i in range(num_shards))
