"""Training an EAGLE-3-style draft head for a target on CPU: `python -m drafts.train --out DIR`.

Stages (each resumable, see __main__.py): prompts (data.py) -> the target's own greedy answers
and its hidden states (collect.py) -> draft vocabulary (vocab.py) -> multi-step (TTT) training
(trainer.py) -> bf16 safetensors + JSON config (export in trainer.py) -> held-out check.
"""
