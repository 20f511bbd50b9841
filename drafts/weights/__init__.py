"""Draft weights shipped with specdec (package data), and which target each belongs to."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
SMOLLM2_135M_EAGLE = HERE / "smollm2-135m-eagle"


def shipped_eagle_path(mc) -> Path:
    """The shipped EAGLE head for a target config (specdec.models.config.ModelConfig)."""
    if (mc.hidden_size, mc.num_layers, mc.vocab_size) == (576, 30, 49152):   # SmolLM2-135M
        return SMOLLM2_135M_EAGLE
    raise ValueError("no EAGLE head is shipped for this model (only for the bundled SmolLM2-135M); "
                     "train one with `python -m drafts.train` and pass speculative_config['model']")
