"""Tree-attention kernel benchmark: achieved KV-read bandwidth vs a measured copy.

    python -m evals.kernel_bench [--batches 1,8,32] [--contexts 512,4096,16384] [--trees 1,16,64]

For every (batch, context, tree size) it builds one layer of a paged bf16 cache
(head_dim 64, 9 query heads over 3 KV heads = GQA 3, the SmolLM2-135M shape,
shuffled block tables), then times `kernels.tree_attention.tree_attention`
eagerly and replayed from a CUDA graph, and `tree_attention_ref` (pure torch).

Bandwidth counts the K/V bytes a request must read at least once
(seq_len x Hkv x D x 2 tensors x 2 bytes); the roof is a measured
device-to-device copy (read + write bytes / time). Prints a table and writes
markdown to evals/results/kernel_bench-<device>.md. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM = 9, 3, 64
BLOCK_SIZE = 16
DTYPE = torch.bfloat16
RESULTS_DIR = Path(__file__).parent / "results"


@dataclass(slots=True)
class CaseResult:
    batch: int
    context: int
    tree: int
    num_kv_splits: int
    kernel_us: float
    graph_us: float
    ref_us: float
    kv_bytes: int
    rel_err: float

    def gbps(self, copy_gbps: float) -> tuple[float, float]:
        achieved = self.kv_bytes / (self.graph_us * 1e-6) / 1e9
        return achieved, achieved / copy_gbps


def time_us(fn, warmup: int = 5, reps: int = 30) -> float:
    """Median wall time of fn() on the current stream, in microseconds (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def copy_bandwidth_gbps(device: torch.device, num_bytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth, counting bytes read + bytes written."""
    src = torch.empty(num_bytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    us = time_us(lambda: dst.copy_(src), warmup=3, reps=20)
    return 2 * num_bytes / (us * 1e-6) / 1e9


def random_tree_mask(num_nodes: int, gen: torch.Generator) -> torch.Tensor:
    """[num_nodes, num_nodes] bool ancestor-or-self mask of a random tree (parents[i] < i)."""
    mask = torch.zeros(num_nodes, num_nodes, dtype=torch.bool)
    mask[0, 0] = True
    for i in range(1, num_nodes):
        parent = int(torch.randint(0, i, (1,), generator=gen))
        mask[i] = mask[parent]
        mask[i, i] = True
    return mask


def build_case(batch: int, context: int, tree: int, device: torch.device, seed: int = 0):
    """Arguments of tree_attention (minus scale) for `batch` identical-shape requests."""
    from specdec.attention import PAD_ID, pack_tree_mask

    gen = torch.Generator().manual_seed(seed)
    seq_len = context + tree
    blocks_per_req = math.ceil(seq_len / BLOCK_SIZE)
    num_blocks = batch * blocks_per_req
    k_cache = torch.randn(num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM, dtype=DTYPE,
                          device=device)
    v_cache = torch.randn_like(k_cache)
    block_tables = torch.full((batch, blocks_per_req + 1), PAD_ID, dtype=torch.int32)
    block_tables[:, :blocks_per_req] = torch.randperm(num_blocks, generator=gen).view(
        batch, blocks_per_req).to(torch.int32)
    q = torch.randn(batch * tree, NUM_HEADS, HEAD_DIM, dtype=DTYPE, device=device)
    cu = torch.arange(0, batch + 1, dtype=torch.int32) * tree
    seq_lens = torch.full((batch,), seq_len, dtype=torch.int32)
    if tree > 1:
        tree_mask = pack_tree_mask(torch.cat([random_tree_mask(tree, gen) for _ in range(batch)]))
        is_tree = torch.ones(batch, dtype=torch.int32)
    else:  # plain decode: one causal token per request
        tree_mask = is_tree = None
    to_dev = lambda t: None if t is None else t.to(device)  # noqa: E731
    args = (q, k_cache, v_cache, to_dev(block_tables), to_dev(cu), to_dev(seq_lens),
            to_dev(tree_mask), to_dev(is_tree))
    kv_bytes = batch * seq_len * NUM_KV_HEADS * HEAD_DIM * 2 * k_cache.element_size()
    return args, kv_bytes


def bench_case(batch: int, context: int, tree: int, device: torch.device) -> CaseResult:
    from kernels.tree_attention import default_num_kv_splits, tree_attention, tree_attention_ref

    args, kv_bytes = build_case(batch, context, tree, device)
    scale = HEAD_DIM ** -0.5
    out = torch.empty_like(args[0])
    run = lambda: tree_attention(*args, scale, tree, out=out)  # noqa: E731
    kernel_us = time_us(run)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    graph_us = time_us(graph.replay)

    ref = tree_attention_ref(*args, scale, tree)
    ref_us = time_us(lambda: tree_attention_ref(*args, scale, tree), warmup=1, reps=3)
    graph.replay()
    torch.cuda.synchronize()
    rel_err = float((out.float() - ref.float()).abs().max() / ref.float().abs().max())

    # The split count the launcher chose (its rule reads shapes only).
    splits = default_num_kv_splits(batch, NUM_HEADS, NUM_KV_HEADS, tree,
                                   args[3].shape[1] * BLOCK_SIZE, device)
    return CaseResult(batch, context, tree, splits, kernel_us, graph_us, ref_us, kv_bytes, rel_err)


def format_table(results: list[CaseResult], copy_gbps: float, device_name: str) -> str:
    lines = [
        f"# Tree-attention kernel bench: {device_name}",
        "",
        f"bf16, head_dim {HEAD_DIM}, {NUM_HEADS} query heads / {NUM_KV_HEADS} KV heads (GQA "
        f"{NUM_HEADS // NUM_KV_HEADS}), block size {BLOCK_SIZE}, shuffled block tables, one layer. "
        f"Measured copy bandwidth (read + write): **{copy_gbps:.0f} GB/s**. "
        "GB/s = K/V bytes of all requests / CUDA-graph replay time.",
        "",
        "| batch | context | tree | splits | kernel us | graph us | KV MB | GB/s | % of copy "
        "| ref us | x vs ref | rel err |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        gbps, frac = r.gbps(copy_gbps)
        lines.append(
            f"| {r.batch} | {r.context} | {r.tree} | {r.num_kv_splits} | {r.kernel_us:.1f} "
            f"| {r.graph_us:.1f} | {r.kv_bytes / 1e6:.1f} | {gbps:.0f} | {100 * frac:.0f}% "
            f"| {r.ref_us:.0f} | {r.ref_us / r.graph_us:.1f} | {r.rel_err:.1e} |")
    return "\n".join(lines) + "\n"


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=parse_ints, default=[1, 8, 32])
    parser.add_argument("--contexts", type=parse_ints, default=[512, 4096, 16384])
    parser.add_argument("--trees", type=parse_ints, default=[1, 16, 64])
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernel_bench measures GPU bandwidth and needs a CUDA device; none is available "
              "here. On CPU the Triton kernels only run in the interpreter, which the tests "
              "use for correctness (tests/test_tree_attention.py).", file=sys.stderr)
        return 1

    device = torch.device("cuda")
    device_name = torch.cuda.get_device_name(device)
    copy_gbps = copy_bandwidth_gbps(device)
    results = []
    for batch in args.batches:
        for context in args.contexts:
            for tree in args.trees:
                results.append(bench_case(batch, context, tree, device))
                r = results[-1]
                print(f"batch {batch:>3} context {context:>6} tree {tree:>3}: "
                      f"{r.graph_us:8.1f} us  {r.gbps(copy_gbps)[0]:7.0f} GB/s", flush=True)
                torch.cuda.empty_cache()
    table = format_table(results, copy_gbps, device_name)
    print()
    print(table)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"kernel_bench-{device_slug(device_name)}.md"
    path.write_text(table)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
