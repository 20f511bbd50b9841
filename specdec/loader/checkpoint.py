"""Checkpoint: a model's config, float32 weights under HF Llama names, and its tokenizer.

Every format loader (HF folder, GGUF file) produces the same Checkpoint, so the model
code reads one naming scheme:

    model.embed_tokens.weight                              [vocab_size, hidden_size]
    model.layers.{i}.input_layernorm.weight                [hidden_size]
    model.layers.{i}.self_attn.q_proj.weight               [num_heads * head_dim, hidden_size]
    model.layers.{i}.self_attn.{k,v}_proj.weight           [num_kv_heads * head_dim, hidden_size]
    model.layers.{i}.self_attn.{q,k,v}_proj.bias           only when config.attention_bias
    model.layers.{i}.self_attn.o_proj.weight               [hidden_size, num_heads * head_dim]
    model.layers.{i}.post_attention_layernorm.weight       [hidden_size]
    model.layers.{i}.mlp.{gate,up}_proj.weight             [intermediate_size, hidden_size]
    model.layers.{i}.mlp.down_proj.weight                  [hidden_size, intermediate_size]
    model.norm.weight                                      [hidden_size]
    lm_head.weight                                         [vocab_size, hidden_size], only when not tied

q/k rows are in HF order (each head's rotary halves contiguous, `rotate_half` style).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from specdec.models.config import ModelConfig

if TYPE_CHECKING:  # importing transformers costs seconds; only load_checkpoint needs it
    from transformers import PreTrainedTokenizerBase

# Buffers some checkpoints carry that are recomputed from the config, never loaded.
IGNORED_WEIGHT_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(slots=True)
class Checkpoint:
    config: ModelConfig
    weights: dict[str, torch.Tensor]       # HF Llama names (see module docstring), float32 (or
                                           # QWeight where the loader kept GGUF blocks), CPU
    tokenizer: PreTrainedTokenizerBase     # .chat_template set when the source has one
    path: str                              # the folder or .gguf file it came from


def load_checkpoint(path: str, keep_quantized: bool = False) -> Checkpoint:
    """Load an HF folder (config.json + *.safetensors + tokenizer files) or a .gguf file.

    keep_quantized: GGUF Q4_0 / Q4_1 / Q8_0 tensors come back as QWeights instead of
    float32 (specdec/models/quant.py); HF folders are always float.
    """
    # The format modules import Checkpoint from here, so they are imported at call time.
    from specdec.loader.gguf_file import is_gguf_file, load_gguf
    from specdec.loader.hf_folder import load_hf_folder

    if not os.path.exists(path):
        raise FileNotFoundError(f"model path {path!r} does not exist")
    if os.path.isdir(path):
        return load_hf_folder(path)
    if is_gguf_file(path):
        return load_gguf(path, keep_quantized)
    raise ValueError(f"{path!r} is neither a model folder (config.json + *.safetensors) "
                     f"nor a GGUF file")


def expected_weight_names(config: ModelConfig) -> list[str]:
    """The exact set of weight names a Checkpoint for `config` holds."""
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not config.tie_word_embeddings:
        names.append("lm_head.weight")
    for i in range(config.num_layers):
        layer = f"model.layers.{i}"
        names += [f"{layer}.input_layernorm.weight", f"{layer}.post_attention_layernorm.weight"]
        names += [f"{layer}.self_attn.{p}_proj.weight" for p in ("q", "k", "v", "o")]
        if config.attention_bias:
            names += [f"{layer}.self_attn.{p}_proj.bias" for p in ("q", "k", "v")]
        names += [f"{layer}.mlp.{p}_proj.weight" for p in ("gate", "up", "down")]
    return names


def check_weight_names(weights: dict[str, torch.Tensor], config: ModelConfig,
                       source: str) -> dict[str, torch.Tensor]:
    """Return `weights` restricted to `expected_weight_names(config)`; raise if any is missing.

    A tied `lm_head.weight` that a checkpoint stores anyway is dropped. Any other unknown
    name raises: it means a feature (q/k norms, MoE, ...) the model code would silently skip.
    """
    expected = expected_weight_names(config)
    missing = [n for n in expected if n not in weights]
    if missing:
        raise ValueError(f"{source}: missing {len(missing)} weight(s) for a {config.architecture} "
                         f"model, e.g. {missing[:5]}")
    expected_set = set(expected)
    ignorable = {"lm_head.weight"} if config.tie_word_embeddings else set()
    unknown = [n for n in weights if n not in expected_set and n not in ignorable
               and not n.endswith(IGNORED_WEIGHT_SUFFIXES)]
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} weight(s) specdec does not know how to use, "
                         f"e.g. {unknown[:5]}")
    return {n: weights[n] for n in expected}
