"""The systems under test: one RowSpec per table row, in table order.

Rows that cannot run here (engine not importable yet, llama-cpp-python not
installed, no draft model) are still listed, as skipped with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from evals.harness import PLAIN, RowSpec
from evals.model_files import ModelFiles, load_hf_model, resolve_model
from evals.runners.llamacpp import PROMPT_LOOKUP_NUM_TOKENS, llamacpp_import_error
from evals.runners.specdec_engine import specdec_import_error
from evals.speculators import SELF_DRAFT_LAYERS, Speculator

HF_GENERATE = "HF generate"
LLAMACPP = "llama.cpp"
NUM_DRAFT_TOKENS = 4  # HF prompt lookup / draft rows draft as many tokens as the engine's k=4 rows
SELF_DRAFT_TOKENS = 3  # HF early exit drafts as many as the engine's self-draft rows


@dataclass(slots=True)
class Settings:
    files: ModelFiles
    dtype: str
    draft_model: str | None
    num_threads: int
    temperature: float = 0.0      # specdec rows only (evals.acceptance --temperature): seeded sampling


def specdec_specs(s: Settings, speculators: list[Speculator]) -> list[RowSpec]:
    from evals.runners.specdec_engine import SpecdecRunner
    why = specdec_import_error()
    model = None if s.files == resolve_model(None) else str(s.files.path)  # None = engine's bundled default
    t = s.temperature
    rows = [RowSpec(PLAIN, "specdec", lambda: SpecdecRunner.load(PLAIN, model, s.dtype, None, t), why)]
    for spec in speculators:
        name = f"specdec {spec.name}"
        load = lambda name=name, cfg=spec.config: SpecdecRunner.load(name, model, s.dtype, cfg, t)  # noqa: E731
        rows.append(RowSpec(name, "specdec", load, why, is_speculative=True))
    return rows


class _SharedHFModel:
    """HF rows share one loaded copy of the weights (and the draft's)."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self._model = self._draft = None

    def model(self):
        if self._model is None:
            self._model = load_hf_model(self.s.files, self.s.dtype)
        return self._model

    def draft(self):
        if self._draft is None:
            self._draft = load_hf_model(resolve_model(self.s.draft_model), self.s.dtype)
        return self._draft


def hf_specs(s: Settings, eos_token_id: int, assisted: bool = True, early_exit: bool = True) -> list[RowSpec]:
    from evals.runners.hf import HFRunner
    shared = _SharedHFModel(s)
    rows = [RowSpec(HF_GENERATE, "hf", lambda: HFRunner(HF_GENERATE, shared.model(), eos_token_id))]
    if not assisted:
        return rows
    name = f"HF prompt lookup k={NUM_DRAFT_TOKENS}"
    rows.append(RowSpec(name, "hf", lambda: HFRunner(name, shared.model(), eos_token_id,
                                                     prompt_lookup_num_tokens=NUM_DRAFT_TOKENS),
                        is_speculative=True))
    name_ee = f"HF early-exit L{SELF_DRAFT_LAYERS} k={SELF_DRAFT_TOKENS}"
    rows.append(RowSpec(name_ee, "hf", lambda: HFRunner(name_ee, shared.model(), eos_token_id,
                                                         assistant_early_exit=SELF_DRAFT_LAYERS,
                                                         num_assistant_tokens=SELF_DRAFT_TOKENS),
                        None if early_exit else "left out of --quick (slow: HF early-exit drafting)",
                        is_speculative=True))
    name_d = f"HF assisted draft k={NUM_DRAFT_TOKENS}"
    rows.append(RowSpec(name_d, "hf", lambda: HFRunner(name_d, shared.model(), eos_token_id,
                                                       assistant_model=shared.draft(),
                                                       num_assistant_tokens=NUM_DRAFT_TOKENS),
                        None if s.draft_model else "needs --draft-model PATH (no draft model is bundled)",
                        is_speculative=True))
    return rows


def llamacpp_specs(s: Settings) -> list[RowSpec]:
    from evals.runners.llamacpp import LlamaCppRunner
    why = llamacpp_import_error()
    if why is None and s.files.gguf_file is None:
        why = "llama.cpp needs a GGUF file (--model is a HF folder)"
    path = str(s.files.path)
    pld = f"llama.cpp prompt lookup k={PROMPT_LOOKUP_NUM_TOKENS}"
    return [
        RowSpec(LLAMACPP, "llama.cpp", lambda: LlamaCppRunner(LLAMACPP, path, s.num_threads, False), why),
        RowSpec(pld, "llama.cpp", lambda: LlamaCppRunner(pld, path, s.num_threads, True), why,
                is_speculative=True),
    ]
