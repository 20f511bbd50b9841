"""Load an HF model folder: config.json + *.safetensors + tokenizer files."""
from __future__ import annotations

import dataclasses
import glob
import json
import os

import torch
from safetensors import safe_open
from transformers import AutoTokenizer

from specdec.loader.checkpoint import Checkpoint, check_weight_names
from specdec.models.config import ModelConfig


def load_hf_folder(folder: str) -> Checkpoint:
    """Read config, every *.safetensors shard (cast to float32) and the tokenizer of `folder`."""
    config = read_hf_config(folder)  # first: an unsupported architecture fails before any I/O
    weights: dict[str, torch.Tensor] = {}
    for shard_path in safetensors_shards(folder):
        with safe_open(shard_path, framework="pt", device="cpu") as shard:
            for name in shard.keys():
                weights[name] = shard.get_tensor(name).to(torch.float32)
    weights = check_weight_names(weights, config, source=folder)
    # local_files_only: a folder path must never turn into a hub lookup.
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return Checkpoint(config=config, weights=weights, tokenizer=tokenizer, path=folder)


def safetensors_shards(folder: str) -> list[str]:
    """The weight files of `folder`: those its index names, else every *.safetensors.

    The index matters where a repo ships one model twice (Mistral: consolidated.safetensors
    beside the HF-named shards); reading both would mix two naming schemes.
    """
    index_path = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index_path):
        with open(index_path) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(folder, name) for name in names]
    paths = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not paths:
        raise FileNotFoundError(f"{folder} has no *.safetensors weight files "
                                f"(other weight formats such as pytorch_model.bin are not read)")
    return paths


def read_hf_config(folder: str) -> ModelConfig:
    """ModelConfig from config.json, with eos ids from generation_config.json merged in.

    Instruct models often list their end-of-turn tokens only in generation_config.json
    (Llama 3: <|eot_id|>), and stopping there is what their chat template expects.
    """
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{folder} has no config.json; expected an HF model folder "
                                f"(config.json + *.safetensors + tokenizer files) or a .gguf file")
    with open(config_path) as f:
        config = ModelConfig.from_hf_dict(json.load(f))
    generation_path = os.path.join(folder, "generation_config.json")
    if os.path.isfile(generation_path):
        with open(generation_path) as f:
            eos = json.load(f).get("eos_token_id")
        extra = eos if isinstance(eos, list) else ([eos] if eos is not None else [])
        merged = tuple(dict.fromkeys([*config.eos_token_ids, *extra]))
        config = dataclasses.replace(config, eos_token_ids=merged)
    return config
