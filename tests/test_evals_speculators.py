"""The speculator registry and --draft-model filling."""
from evals import speculators
from evals.speculators import DRAFT_MODEL, SPECULATORS


def test_without_draft_model_only_self_contained_speculators_run():
    ready, notes = speculators.resolve(None)
    assert [s.name for s in ready] == [s.name for s in SPECULATORS if DRAFT_MODEL not in s.config.values()]
    assert notes and all("--draft-model" in n for n in notes)


def test_draft_model_path_is_filled_in():
    ready, notes = speculators.resolve("/models/draft.gguf")
    assert len(ready) == len(SPECULATORS) and notes == []
    filled = [s for s in ready if s.config.get("method") == "draft_model" and "model" in s.config]
    assert filled and all(s.config["model"] == "/models/draft.gguf" for s in filled)
    assert all(DRAFT_MODEL not in s.config.values() for s in ready)


def test_names_are_unique():
    names = [s.name for s in SPECULATORS]
    assert len(names) == len(set(names))


def test_every_config_is_accepted_by_the_engine():
    import pytest
    spec_mod = pytest.importorskip("specdec.speculative")
    for s in speculators.resolve("/models/draft.gguf")[0]:
        cfg = spec_mod.SpeculativeConfig.from_dict(s.config)
        assert cfg.method == s.config["method"]
