"""Field checks shared by every boundary (SamplingParams, prompts, chat messages, configs).

Each check raises ValueError naming the field and what is allowed, so the server
can hand the message back unchanged (HTTP 400) and nothing malformed reaches a
tokenizer, a template, torch or the engine step. `bool` is never accepted where
an integer or a number is meant (`True` is an `int` in Python, not in JSON).
"""
from __future__ import annotations

import math
import operator
from typing import Any

MAX_SEED = 2**64 - 1       # torch.Generator.manual_seed takes 64-bit seeds


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None,
              optional: bool = False) -> int | None:
    """An integer (numpy integers too, bool never) in [lo, hi]; None passes when optional."""
    if value is None and optional:
        return None
    allowed = _int_range(lo, hi) + (" or None" if optional else "")
    if isinstance(value, bool):
        raise ValueError(f"{name} must be {allowed}, got a bool ({value!r})")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be {allowed}, got {_short(value)}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be {allowed}, got {_short(value)}")
    return value


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> float:
    """A finite real number in [lo, hi] (or (lo, hi] with lo_open); ints are accepted."""
    allowed = _float_range(lo, hi, lo_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_real(value):
        raise ValueError(f"{name} must be a finite number {allowed}, got {_short(value)}")
    try:
        value = float(value)
    except (OverflowError, TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number {allowed}, got {_short(value)}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo) or hi is not None and value > hi:
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {_short(value)}")
    return value


def check_text(name: str, value: Any, max_len: int | None = None, allow_empty: bool = True) -> str:
    """A str that is valid Unicode (encodable as UTF-8: no lone surrogates)."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {_short(value)}")
    if not allow_empty and not value:
        raise ValueError(f"{name} must be a non-empty string")
    if max_len is not None and len(value) > max_len:
        raise ValueError(f"{name} must be at most {max_len} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} is not valid Unicode: {e.reason} at character {e.start} "
                         f"({value[e.start:e.end]!r})") from None
    return value


def check_token_ids(name: str, value: Any, vocab_size: int) -> list[int]:
    """A non-empty sequence of token ids in [0, vocab_size)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a list of token ids, got {_short(value)}")
    ids = list(value)
    if not ids:
        raise ValueError(f"{name} is empty: give at least one token")
    return [check_int(f"{name}[{i}]", t, 0, vocab_size - 1) for i, t in enumerate(ids)]


def _is_real(value: Any) -> bool:
    """numpy floating / integer scalars count as numbers."""
    return hasattr(value, "__float__") and hasattr(value, "dtype")


def _int_range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"an integer in [{lo}, {hi}]"
    if lo is not None:
        return f"an integer >= {lo}"
    return "an integer" if hi is None else f"an integer <= {hi}"


def _float_range(lo: float | None, hi: float | None, lo_open: bool) -> str:
    left = "(" if lo_open else "["
    if lo is not None and hi is not None:
        return f"in {left}{lo}, {hi}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    return "" if hi is None else f"<= {hi}"


def _short(value: Any) -> str:
    """A repr safe to put in an error message: bounded length, the type named."""
    try:
        text = repr(value)
    except Exception:           # a hostile __repr__ must not replace our message
        text = "<unprintable>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"
