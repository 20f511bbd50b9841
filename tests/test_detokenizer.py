"""IncrementalDetokenizer on the bundled tokenizer: streamed deltas, UTF-8 splits, stop strings.

Tokens are fed one at a time the way OutputProcessor does (add_token, then delta);
the reference is the tokenizer's own decode of all ids at once.
"""
from __future__ import annotations

import pytest

from specdec.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer

MULTIBYTE = "Café crème 🍰🎉 naïve 東京タワー 你好世界 — fin"
PLAIN = "The quick brown fox jumps over the lazy dog."


def stream(tok, ids: list[int], stop: list[str] | None = None, include_stop: bool = False):
    """Feed ids one by one. Returns (deltas, detokenizer, stop string hit or None)."""
    detok = IncrementalDetokenizer(tok, stop or [], include_stop)
    deltas, hit = [], None
    for t in ids:
        hit = detok.add_token(t)
        if hit is not None:
            break
        deltas.append(detok.delta(finished=False))
    detok.flush()
    deltas.append(detok.delta(finished=True))
    return deltas, detok, hit


def test_multibyte_text_streams_without_replacement_chars(bundled_tokenizer):
    tok = bundled_tokenizer
    ids = tok.encode(MULTIBYTE, add_special_tokens=False)
    # precondition: some characters really are split across tokens
    assert any(REPLACEMENT_CHAR in tok.decode([t]) for t in ids)
    deltas, detok, _ = stream(tok, ids)
    assert all(REPLACEMENT_CHAR not in d for d in deltas)
    assert "".join(deltas) == tok.decode(ids, skip_special_tokens=True) == MULTIBYTE
    assert detok.text == MULTIBYTE


def test_special_tokens_are_skipped(bundled_tokenizer):
    tok = bundled_tokenizer
    ids = tok.encode(PLAIN, add_special_tokens=False) + [tok.eos_token_id]
    deltas, _, _ = stream(tok, ids)
    assert "".join(deltas) == tok.decode(ids, skip_special_tokens=True) == PLAIN


def test_unfinished_character_is_held_until_flush(bundled_tokenizer):
    tok = bundled_tokenizer
    ids = tok.encode("ok 🍰", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, [])
    for t in ids[:-1]:                        # the emoji's last byte is missing
        detok.add_token(t)
    assert detok.delta(finished=False) == "ok"
    detok.add_token(ids[-1])
    assert detok.delta(finished=False) == " 🍰"


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_split_across_tokens(bundled_tokenizer, include):
    tok = bundled_tokenizer
    ids = tok.encode(PLAIN, add_special_tokens=False)
    stop = "ox ju"                            # the tail of " fox" + the head of " jumps"
    assert not any(stop in tok.decode([t]) for t in ids)
    deltas, detok, hit = stream(tok, ids, [stop], include)
    assert hit == stop
    k = PLAIN.index(stop)
    expected = PLAIN[:k + len(stop)] if include else PLAIN[:k]
    assert "".join(deltas) == detok.text == expected
    if not include:
        assert all(stop not in "".join(deltas[:i + 1]) for i in range(len(deltas)))
    # nothing that could still become the stop string was shown before it completed:
    # right after " fox" the "ox" is held back
    fox = [tok.decode([t]) for t in ids].index(" fox")
    assert "".join(deltas[:fox + 1]) == "The quick brown f"


def test_held_back_text_is_released_when_the_stop_cannot_complete(bundled_tokenizer):
    tok = bundled_tokenizer
    ids = tok.encode(PLAIN, add_special_tokens=False)
    deltas, _, hit = stream(tok, ids, ["fox runs"])
    assert hit is None
    pieces = [tok.decode([t]) for t in ids]
    fox = pieces.index(" fox")
    assert "".join(deltas[:fox + 1]) == "The quick brown "   # "fox" may start the stop
    assert "".join(deltas[:fox + 2]) == "The quick brown fox jumps"
    assert "".join(deltas) == PLAIN


def test_stop_string_inside_multibyte_characters(bundled_tokenizer):
    tok = bundled_tokenizer
    ids = tok.encode(MULTIBYTE, add_special_tokens=False)
    deltas, detok, hit = stream(tok, ids, ["東京"])
    assert hit == "東京"
    assert "".join(deltas) == detok.text == MULTIBYTE[:MULTIBYTE.index("東京")]
    assert all(REPLACEMENT_CHAR not in d for d in deltas)


def test_first_of_several_stop_strings_wins_and_text_after_is_dropped(bundled_tokenizer):
    tok = bundled_tokenizer
    ids = tok.encode(PLAIN + " And more text follows here.", add_special_tokens=False)
    deltas, detok, hit = stream(tok, ids, ["lazy", "brown"])
    assert hit == "brown"
    assert "".join(deltas) == detok.text == "The quick "
