"""python -m drafts.train --out drafts/weights/smollm2-135m-eagle [--collect-minutes M --train-minutes M]

Trains an EAGLE-3-style head for the bundled SmolLM2-135M-Instruct on this machine's CPU:

  1. prompts   ShareGPT first user turns (drafts/train/data.py), MT-bench / HumanEval excluded
  2. collect   the target's own greedy answers + hidden states, in shards (collect.py); then
               off-policy shards: (user turn, ShareGPT answer) prefilled once, labelled with
               the target's argmax (10x cheaper per token than generating)
  3. vocab     the most frequent answer tokens -> draft vocabulary (vocab.py)
  4. train     multi-step (TTT) loss, AdamW, checkpoints (ttt.py, trainer.py)
  5. export    bf16 safetensors + config.json into --out, plus train_summary.json
  6. check     tau of the exported head on held-out ShareGPT prompts (the engine, greedy)

Every stage resumes after an interruption: shards and checkpoints are written atomically
under --work, and a rerun of the same command skips what is done. Shard 0 is held out of
training (validation accuracy per unrolled step).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m drafts.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for config.json + model.safetensors")
    p.add_argument("--work", default=str(Path.home() / ".cache/specdec/eagle_train"),
                   help="shards and checkpoints (resumable state)")
    p.add_argument("--collect-minutes", type=float, default=50.0, help="data budget of this run")
    p.add_argument("--prefill-minutes", type=float, default=15.0, help="off-policy data budget of this run")
    p.add_argument("--collect-shards", type=int, help="stop on-policy data at this many shards (of "
                   "--shard-size prompts), whatever time is left: a fixed data size for reproduction")
    p.add_argument("--prefill-shards", type=int, help="the same for the off-policy shards")
    p.add_argument("--prefill-max-tokens", type=int, default=512)
    p.add_argument("--train-minutes", type=float, default=60.0, help="training budget of this run")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--ttt-steps", type=int, default=3)
    p.add_argument("--aux-layers", default="2,15,27")
    p.add_argument("--draft-vocab-size", type=int, default=8192)
    p.add_argument("--max-new-tokens", type=int, default=192)
    p.add_argument("--max-prompt-tokens", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=32)
    p.add_argument("--pack-rows", type=int, default=1024)
    p.add_argument("--check-prompts", type=int, default=8, help="held-out prompts for the tau check")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> None:
    from drafts.eagle_head import EagleConfig, EagleHead, save_head
    from drafts.train.collect import collect, collect_prefill, shard_path
    from drafts.train.data import sharegpt_pairs, sharegpt_prompts
    from drafts.train.trainer import TrainSettings, evaluate, train
    from drafts.train.ttt import make_packs
    from drafts.train.vocab import build_vocab, target_to_draft
    from specdec.loader import bundled_model_path, load_checkpoint
    from specdec.models.rope import RotaryEmbedding
    from specdec.threads import ThreadGuard

    args = parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    layers = tuple(int(x) for x in args.aux_layers.split(","))
    times = json.loads((work / "times.json").read_text()) if (work / "times.json").exists() else {}

    def timed(name, t0):
        times[name] = times.get(name, 0.0) + time.monotonic() - t0
        (work / "times.json").write_text(json.dumps(times, indent=2))

    # 1-2: prompts and the target's own answers with features
    t0 = time.monotonic()
    prompts = sharegpt_prompts(seed=args.seed)
    held_out = prompts[-args.check_prompts:]          # never collected: collection runs from the front
    num_shards = collect(work / "data", prompts[:-args.check_prompts], layers, args.collect_minutes,
                         args.max_new_tokens, args.shard_size, args.max_prompt_tokens, args.collect_shards)
    timed("collect_s", t0)
    if num_shards < 2:
        raise SystemExit("need at least 2 shards (1 held out); give more --collect-minutes")
    t0 = time.monotonic()
    banned = {p.text for p in held_out}
    pairs = [pq for pq in sharegpt_pairs(seed=args.seed + 1) if pq[0] not in banned]
    num_prefill = collect_prefill(work / "prefill", pairs, layers, args.prefill_minutes, 2 * args.shard_size,
                                  args.prefill_max_tokens, args.prefill_shards)
    timed("prefill_s", t0)
    shards = [torch.load(shard_path(work / "data", i)) for i in range(num_shards)
              if shard_path(work / "data", i).exists()]
    pre = [torch.load(shard_path(work / "prefill", i)) for i in range(num_prefill)
           if shard_path(work / "prefill", i).exists()]

    def flat(key, part):
        return [x for s in part for x in s[key]]

    # 3: draft vocabulary (fixed once training started: it is stored with the checkpoint)
    ckpt_path = work / "train_ckpt.pt"
    ckpt = load_checkpoint(bundled_model_path(), keep_quantized=True)
    mc, tok = ckpt.config, ckpt.tokenizer
    embed_w = ckpt.weights["model.embed_tokens.weight"]
    embed = (embed_w.dequantize() if hasattr(embed_w, "dequantize") else embed_w).float()
    del ckpt
    vocab_path = work / "vocab.pt"
    if vocab_path.exists():
        vocab = torch.load(vocab_path)
    else:
        answers = [t[p:] for s in shards[1:] for t, p in zip(s["tokens"], s["prompt_len"])]
        answers += [a[p - 1:] for s in pre for a, p in zip(s["argmax"], s["prompt_len"])]
        d2t, coverage = build_vocab(answers, mc.vocab_size, args.draft_vocab_size,
                                    always=tuple(mc.eos_token_ids))
        vocab = {"d2t": d2t, "coverage": coverage, "num_shards": len(shards) - 1, "num_prefill": len(pre)}
        torch.save(vocab, vocab_path)
    print(f"draft vocabulary {args.draft_vocab_size}: covers {vocab['coverage']:.3%} of answer tokens")
    t2d = target_to_draft(vocab["d2t"], mc.vocab_size)

    # 4: train
    t0 = time.monotonic()
    # the data the vocabulary was built on (a resumed run trains on exactly the same packs)
    train_shards, pre = shards[1:1 + vocab["num_shards"]], pre[:vocab["num_prefill"]]
    packs = make_packs(flat("tokens", train_shards), flat("prompt_len", train_shards),
                       flat("features", train_shards), t2d, args.pack_rows)
    packs += make_packs(flat("tokens", pre), flat("prompt_len", pre), flat("features", pre), t2d,
                        args.pack_rows, argmax=flat("argmax", pre))
    val = make_packs(shards[0]["tokens"], shards[0]["prompt_len"], shards[0]["features"], t2d, args.pack_rows)
    num_answer = sum(int((p.labels >= 0).sum()) for p in packs)
    print(f"{len(packs)} packs, {sum(len(p.labels) for p in packs)} rows, {num_answer} labelled answer tokens")
    torch.manual_seed(args.seed)
    head = EagleHead(EagleConfig.for_target(mc, layers, args.draft_vocab_size))
    head.d2t.copy_(vocab["d2t"])
    head.lm_head.copy_(embed[torch.arange(args.draft_vocab_size) + head.d2t])
    rope = RotaryEmbedding(mc.head_dim, 4096, mc.rope_theta, mc.rope_scaling, torch.float32, "cpu")
    ThreadGuard().check()
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, ttt_steps=args.ttt_steps,
                             minutes=args.train_minutes, seed=args.seed)
    summary = train(head, embed, rope, packs, val, ckpt_path, settings)
    timed("train_s", t0)

    # 5: export
    save_head(head, out)
    # 6: held-out tau with the engine (greedy, batch 1)
    t0 = time.monotonic()
    summary["heldout_tau"] = heldout_tau(out, tok, held_out, args.max_new_tokens)
    timed("check_s", t0)
    summary.update(times=times, draft_vocab_coverage=vocab["coverage"], train_shards=len(train_shards),
                   train_sequences=len(flat("tokens", train_shards)), prefill_shards=len(pre),
                   prefill_sequences=len(flat("tokens", pre)), train_rows=sum(len(p.labels) for p in packs),
                   train_answer_tokens=num_answer, val_sequences=len(shards[0]["tokens"]),
                   settings=vars(args))
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("steps", "val_top1_per_step", "heldout_tau", "times")}, indent=2))


def heldout_tau(head_dir: Path, tokenizer, prompts, max_new_tokens: int) -> float:
    """tau (tokens per verified step incl. bonus) on held-out prompts, one request at a time, at the
    head's full tree every step (the cost-aware policy would judge the speed, not the head)."""
    from drafts.train.collect import chat_ids
    from specdec import LLM, SamplingParams
    llm = LLM(speculative_config={"method": "eagle", "model": str(head_dir), "adaptive": False})
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    for p in prompts:
        ids = chat_ids(tokenizer, p.text)
        llm.generate(prompt_token_ids=[ids], sampling_params=params)
    return llm.engine.spec_metrics.tau


if __name__ == "__main__":
    main()
