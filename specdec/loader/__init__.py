"""Model weights + tokenizer from an HF folder or a GGUF file, as one Checkpoint."""
from specdec.loader.bundled import BundledModelMissingError, bundled_model_path
from specdec.loader.checkpoint import Checkpoint, expected_weight_names, load_checkpoint

__all__ = ["Checkpoint", "load_checkpoint", "expected_weight_names",
           "bundled_model_path", "BundledModelMissingError"]
