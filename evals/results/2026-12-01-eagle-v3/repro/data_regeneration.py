"""Regenerate on-policy shards 0-1 from scratch (the training command's collect stage, same
prompts) and compare them with the shards in a work folder (the shipped head's was
~/.cache/specdec/eagle_v3): python data_regeneration.py [WORK_FOLDER]"""
import sys, tempfile, torch
from pathlib import Path
from drafts.train.collect import collect, shard_path
from drafts.train.data import sharegpt_prompts
torch.set_num_threads(2)
old = Path(sys.argv[1] if len(sys.argv) > 1 else Path.home() / ".cache/specdec/eagle_train") / "data"
prompts = sharegpt_prompts(seed=0)
with tempfile.TemporaryDirectory() as d:
    n = collect(Path(d), prompts[:-8], (2, 15, 27), 60.0, 192, 32, 256, max_shards=2)
    for i in range(n):
        a, b = torch.load(shard_path(Path(d), i)), torch.load(shard_path(old, i))
        same_tok = [torch.equal(x, y) for x, y in zip(a["tokens"], b["tokens"])]
        fd = max(float((x.float() - y.float()).abs().max()) for x, y, s in zip(a["features"], b["features"], same_tok) if s)
        print(f"shard {i}: {sum(same_tok)}/{len(same_tok)} sequences token-identical, "
              f"{sum(len(t) for t in a['tokens'])} vs {sum(len(t) for t in b['tokens'])} tokens, "
              f"max feature diff on identical ones {fd:.3g}", flush=True)
