"""EngineConfig: the one validated settings object. Each component reads only its fields."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from specdec.validation import MAX_SEED, check_bool, check_int, check_text

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 / AMX make bf16 matmuls faster than fp32 on x86 CPUs."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def default_dtype(device: str, quantized: bool = False) -> torch.dtype:
    """The activation / KV dtype. Quantized CPU linears cast their inputs to bf16 themselves and
    return float32, so around them the residual stream and KV stay float32 (cheap at 135M and
    exact-friendly); dense weights use bf16 where the CPU multiplies it fast."""
    if device.startswith("cuda"):
        return torch.bfloat16
    if quantized:
        return torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def resolve_dtype(dtype: str | torch.dtype | None, device: str, quantized: bool = False) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device, quantized)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)} or 'auto'")
    return DTYPES[dtype]


@dataclass(slots=True)
class EngineConfig:
    model: str | None = None              # HF folder or .gguf file; None = bundled SmolLM2
    dtype: str | torch.dtype | None = None  # None/"auto" = fastest on the device
    device: str = "cpu"
    block_size: int = 16                  # tokens per KV block
    kv_cache_memory: int = 512 * 2**20    # bytes for the KV pool (target + draft)
    num_kv_blocks: int | None = None      # overrides kv_cache_memory (tests)
    max_num_seqs: int = 64                # running requests per step
    max_num_batched_tokens: int = 512     # token budget per step (chunked prefill)
    max_model_len: int | None = None      # context limit; None = the model's
    enable_prefix_caching: bool = True
    seed: int = 0                         # engine generator for unseeded requests
    speculative_config: dict[str, Any] | None = None
    attention_backend: str = "auto"       # "auto" | "torch" | "triton"
    # Weights: "auto" keeps a GGUF's Q4_0/Q4_1 (4-bit) and Q8_0 (int8) tensors quantized and
    # loads float checkpoints as they are; "int4" / "int8" also quantize float weights at load;
    # None dequantizes everything (the exact path, e.g. dtype="float32" against HF).
    quantization: str | None = "auto"
    num_threads: int | None = None        # torch CPU threads; None = measured default (threads.py)
    check_invariants: bool = False        # check block accounting after every step (tests; slow)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model is not None:
            check_text("model", self.model, allow_empty=False)
        check_text("device", self.device, allow_empty=False)
        check_int("block_size", self.block_size, 8, 1024)
        if self.block_size % 8:
            raise ValueError(f"block_size must be a multiple of 8 in [8, 1024], got {self.block_size}")
        check_int("kv_cache_memory", self.kv_cache_memory, 1)
        check_int("num_kv_blocks", self.num_kv_blocks, 1, optional=True)
        check_int("max_num_seqs", self.max_num_seqs, 1)
        check_int("max_num_batched_tokens", self.max_num_batched_tokens, 1)
        check_int("max_model_len", self.max_model_len, 2, optional=True)
        check_bool("enable_prefix_caching", self.enable_prefix_caching)
        check_int("seed", self.seed, 0, MAX_SEED)
        if self.speculative_config is not None:
            from specdec.speculative import SpeculativeConfig
            SpeculativeConfig.from_dict(self.speculative_config)   # fail before loading weights
        if self.attention_backend not in ("auto", "torch", "triton"):
            raise ValueError(f"attention_backend must be auto|torch|triton, got {self.attention_backend!r}")
        check_bool("check_invariants", self.check_invariants)
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra must be a dict, got {type(self.extra).__name__}")
        if self.quantization not in (None, "auto", "int4", "int8"):
            raise ValueError(f"quantization must be 'auto', 'int4', 'int8' or None, got {self.quantization!r}")
        if self.quantization is not None and not self.device.startswith("cpu"):
            # the weight-only kernels used here are the CPU ones
            raise ValueError(f"quantization={self.quantization!r} needs device='cpu'; use quantization=None")
        check_int("num_threads", self.num_threads, 1, 1024, optional=True)
        self.dtype = resolve_dtype(self.dtype, self.device, quantized=self.quantization is not None)
