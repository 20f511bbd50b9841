"""Load a GGUF file (llama.cpp's format): rename to HF, undo the q/k permute, keep or dequantize.

Q4_0 / Q4_1 / Q8_0 tensors can stay in their own integer form (a `QWeight`, see
specdec/models/quant.py) for the weight-only fast path; every other type, and every
tensor when `keep_quantized` is False, is dequantized to float32.

GGUF keeps everything in one file: metadata key/values (architecture sizes, the
tokenizer's vocabulary and merges, the chat template), a tensor table, then aligned
tensor data. Quantized tensors are stored as blocks along the fastest-moving dimension,
and GGUF lists dimensions fastest first, so shapes are reversed to get torch order.

The header is parsed here with `struct` rather than `gguf.GGUFReader`: the reader builds
a numpy view for every vocabulary string and takes ~4 s on a 49k-token vocabulary, while
this parse takes ~0.15 s. Dequantization is `gguf.quants.dequantize`.
"""
from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass
from math import prod

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGMLQuantizationType
from gguf.quants import dequantize

from specdec.loader.checkpoint import Checkpoint, check_weight_names
from specdec.models.quant import QWeight, from_gguf_blocks
from specdec.models.config import ModelConfig, normalize_architecture

# GGUFValueType id -> struct format of the scalar types; 8 = string, 9 = array.
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# GGUF tensor name -> HF name; {i} is the layer index.
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_PATTERN = re.compile(r"blk\.(\d+)\.(.+)")
# GGUF types that stay quantized (as a QWeight) when the loader is asked to keep them.
QWEIGHT_TYPES = ("Q4_0", "Q4_1", "Q8_0")


@dataclass(slots=True, frozen=True)
class GGUFTensorInfo:
    name: str                       # GGUF name, e.g. "blk.0.attn_q.weight"
    shape: tuple[int, ...]          # torch order (GGUF's dimension list reversed)
    ggml_type: GGMLQuantizationType
    offset: int                     # absolute byte offset of the data in the file


def is_gguf_file(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == struct.pack("<I", GGUF_MAGIC)


def load_gguf(path: str, keep_quantized: bool = False) -> Checkpoint:
    """Read every tensor of `path` (float32, or a QWeight where `keep_quantized` and the type
    maps onto one) and build its config and tokenizer."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        metadata, infos = read_header(blob, path)
        config = config_from_metadata(metadata, infos)
        weights = {_hf_name(name): (quantized_tensor(blob, info)
                                    if keep_quantized and info.ggml_type.name in QWEIGHT_TYPES
                                    else dequantize_tensor(blob, info))
                   for name, info in infos.items()}
    if config.architecture == "llama":
        # Only llama-family files are permuted by llama.cpp's converter; Qwen2 files are not.
        for name, w in weights.items():
            heads = (config.num_heads if ".self_attn.q_proj." in name else
                     config.num_kv_heads if ".self_attn.k_proj." in name else None)
            if heads is None:
                continue
            if isinstance(w, QWeight):
                weights[name] = w.map_rows(lambda t, h=heads: unpermute_rope_rows(t, h))
            else:
                weights[name] = unpermute_rope_rows(w, heads)
    weights = check_weight_names(weights, config, source=path)
    tokenizer = load_gguf_tokenizer(path, metadata)
    return Checkpoint(config=config, weights=weights, tokenizer=tokenizer, path=path)


def read_header(blob: mmap.mmap, path: str) -> tuple[dict, dict[str, GGUFTensorInfo]]:
    """(metadata, {gguf_name: GGUFTensorInfo}) without touching tensor data."""
    magic, version, num_tensors, num_kv = struct.unpack_from("<IIQQ", blob, 0)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (bad magic bytes)")
    if version not in (2, 3):  # v1 used 32-bit counts; big-endian files show a huge version
        raise ValueError(f"{path}: unsupported GGUF version {version}")
    pos = 24
    metadata = {}
    for _ in range(num_kv):
        key, pos = _read_string(blob, pos)
        (value_type,) = struct.unpack_from("<I", blob, pos)
        metadata[key], pos = _read_value(blob, pos + 4, value_type)
    table = []
    for _ in range(num_tensors):
        name, pos = _read_string(blob, pos)
        (num_dims,) = struct.unpack_from("<I", blob, pos)
        dims = struct.unpack_from(f"<{num_dims}Q", blob, pos + 4)
        ggml_type, offset = struct.unpack_from("<IQ", blob, pos + 4 + 8 * num_dims)
        pos += 4 + 8 * num_dims + 12
        table.append((name, tuple(reversed(dims)), GGMLQuantizationType(ggml_type), offset))
    alignment = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    data_start = -(-pos // alignment) * alignment  # tensor data begins at the next boundary
    infos = {name: GGUFTensorInfo(name, shape, t, data_start + offset)
             for name, shape, t, offset in table}
    return metadata, infos


def _read_string(blob: mmap.mmap, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", blob, pos)
    pos += 8
    return blob[pos:pos + length].decode("utf-8", errors="replace"), pos + length


def _read_value(blob: mmap.mmap, pos: int, value_type: int):
    """One metadata value starting at `pos`, and the position just past it."""
    if value_type in _SCALAR_FORMATS:
        fmt = _SCALAR_FORMATS[value_type]
        return struct.unpack_from(fmt, blob, pos)[0], pos + struct.calcsize(fmt)
    if value_type == _STRING:
        return _read_string(blob, pos)
    if value_type == _ARRAY:
        item_type, count = struct.unpack_from("<IQ", blob, pos)
        pos += 12
        if item_type in _SCALAR_FORMATS:  # one bulk read, not `count` struct calls
            fmt = _SCALAR_FORMATS[item_type]
            values = struct.unpack_from(f"<{count}{fmt[1]}", blob, pos)
            return list(values), pos + count * struct.calcsize(fmt)
        values = []
        for _ in range(count):
            value, pos = _read_value(blob, pos, item_type)
            values.append(value)
        return values, pos
    raise ValueError(f"unknown GGUF metadata value type {value_type}")


def dequantize_tensor(blob: mmap.mmap, info: GGUFTensorInfo) -> torch.Tensor:
    """float32 copy of one tensor, shape `info.shape` (torch order)."""
    block_size, block_bytes = GGML_QUANT_SIZES[info.ggml_type]
    # Blocks run along the last (fastest) torch dimension, so each row is whole blocks.
    row_bytes = info.shape[-1] // block_size * block_bytes
    num_rows = prod(info.shape[:-1])
    raw = np.frombuffer(blob, dtype=np.uint8, count=num_rows * row_bytes, offset=info.offset)
    values = dequantize(raw.reshape(num_rows, row_bytes), info.ggml_type)
    if info.ggml_type == GGMLQuantizationType.F32:
        values = values.copy()  # a read-only view into the mmap otherwise; the file gets closed
    return torch.from_numpy(values).reshape(info.shape)


def quantized_tensor(blob: mmap.mmap, info: GGUFTensorInfo) -> QWeight:
    """The tensor's GGUF blocks as a QWeight (2-D tensors of a QWEIGHT_TYPES type only)."""
    block_size, block_bytes = GGML_QUANT_SIZES[info.ggml_type]
    rows, cols = info.shape
    row_bytes = cols // block_size * block_bytes
    raw = np.frombuffer(blob, dtype=np.uint8, count=rows * row_bytes, offset=info.offset)
    return from_gguf_blocks(raw.reshape(rows, row_bytes), info.ggml_type.name, (rows, cols))


def _hf_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _LAYER_PATTERN.fullmatch(gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    if gguf_name == "rope_freqs.weight":
        raise ValueError("GGUF carries rope_freqs.weight (Llama-3.1-style per-frequency rope "
                         "scaling), which specdec does not read yet; load the HF folder instead")
    raise ValueError(f"GGUF tensor {gguf_name!r} has no HF equivalent specdec knows")


def unpermute_rope_rows(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation; `w` is [num_heads * head_dim, ...] (weight or bias).

    llama.cpp's rope rotates adjacent pairs, so its converter interleaves each head's two
    rotary halves: GGUF row 2*j + c holds HF row c * head_dim/2 + j (c = 0, 1). HF's
    `rotate_half` rope wants the halves contiguous, which is what we return.
    """
    head_dim = w.shape[0] // num_heads
    rest = w.shape[1:]
    # (num_heads, head_dim/2, 2, ...) -> (num_heads, 2, head_dim/2, ...)
    return w.reshape(num_heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(w.shape).contiguous()


def config_from_metadata(metadata: dict, infos: dict[str, GGUFTensorInfo]) -> ModelConfig:
    """ModelConfig from `{arch}.*` and `tokenizer.ggml.*` keys; tying from the tensor list."""
    arch = metadata.get("general.architecture", "?")
    family = normalize_architecture(arch)  # raises UnsupportedArchitectureError naming `arch`

    def key(name: str, default=None):
        return metadata.get(f"{arch}.{name}", default)

    hidden_size = key("embedding_length")
    num_heads = key("attention.head_count")
    num_kv_heads = key("attention.head_count_kv", num_heads)
    vocab_size = key("vocab_size") or len(metadata.get("tokenizer.ggml.tokens", ()))
    embed_rows = infos["token_embd.weight"].shape[0]
    if vocab_size != embed_rows:
        raise ValueError(f"GGUF says vocab_size={vocab_size} but token_embd has {embed_rows} rows")
    scaling_type = key("rope.scaling.type", "none")
    rope_scaling = None
    if scaling_type != "none":
        rope_scaling = {"rope_type": scaling_type, "factor": key("rope.scaling.factor", 1.0)}
        if key("rope.scaling.original_context_length") is not None:
            rope_scaling["original_max_position_embeddings"] = key("rope.scaling.original_context_length")
    # Instruct GGUFs may mark end-of-turn / end-of-message apart from end-of-sequence.
    eos_keys = ("eos_token_id", "eot_token_id", "eom_token_id")
    eos_ids = [metadata[f"tokenizer.ggml.{k}"] for k in eos_keys if f"tokenizer.ggml.{k}" in metadata]
    return ModelConfig(
        architecture=family,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=key("feed_forward_length"),
        num_layers=key("block_count"),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        head_dim=key("attention.key_length", hidden_size // num_heads),
        rms_norm_eps=float(key("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(key("rope.freq_base", 10000.0)),
        max_position_embeddings=key("context_length", 4096),
        tie_word_embeddings="output.weight" not in infos,
        attention_bias="blk.0.attn_q.bias" in infos,
        rope_scaling=rope_scaling,
        bos_token_id=metadata.get("tokenizer.ggml.bos_token_id"),
        eos_token_ids=tuple(dict.fromkeys(eos_ids)),
    )


def load_gguf_tokenizer(path: str, metadata: dict):
    """transformers' own GGUF tokenizer, built from the vocabulary and merges in the file.

    We call the tokenizer class AutoTokenizer would pick for this architecture directly:
    AutoTokenizer first builds a model config through transformers' legacy GGUF reader,
    which costs ~5 s on the bundled file; the tokenizer built is the same.
    """
    from transformers.models.auto.tokenization_auto import (
        TOKENIZER_MAPPING_NAMES, tokenizer_class_from_name)
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    class_name = TOKENIZER_MAPPING_NAMES.get(metadata["general.architecture"])
    tokenizer_class = (tokenizer_class_from_name(class_name) if class_name else None) or TokenizersBackend
    folder, file_name = os.path.split(os.path.abspath(path))
    tokenizer = tokenizer_class.from_pretrained(folder, gguf_file=file_name, local_files_only=True)
    if tokenizer.chat_template is None and "tokenizer.chat_template" in metadata:
        tokenizer.chat_template = metadata["tokenizer.chat_template"]
    return tokenizer
