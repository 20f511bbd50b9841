"""Incremental detokenizer: text deltas that never split UTF-8 and never leak a stop string.

Decoding token by token with `decode([t])` breaks multi-byte characters and
word-boundary spacing, so we decode a short window of recent tokens and emit
the new suffix (vLLM's prefix/read offsets). Text that could still turn into
a stop string is held back until it cannot.
"""
from __future__ import annotations

from dataclasses import dataclass, field

REPLACEMENT_CHAR = "\ufffd"  # what a tokenizer gives for an incomplete UTF-8 sequence


@dataclass(slots=True)
class IncrementalDetokenizer:
    tokenizer: object
    stop: list[str]
    include_stop: bool = False
    skip_special_tokens: bool = True
    token_ids: list[int] = field(default_factory=list)
    prefix_offset: int = 0      # window start for decoding context
    read_offset: int = 0        # tokens before this are already in `text`
    text: str = ""              # all output text decoded so far (stop-truncated when stopped)
    num_emitted_chars: int = 0  # how much of `text` has been handed out

    def add_token(self, token_id: int) -> str | None:
        """Append one output token. Returns the stop string if it completed one (text is cut there)."""
        self.token_ids.append(token_id)
        prefix = self.tokenizer.decode(self.token_ids[self.prefix_offset:self.read_offset],
                                       skip_special_tokens=self.skip_special_tokens)
        full = self.tokenizer.decode(self.token_ids[self.prefix_offset:],
                                     skip_special_tokens=self.skip_special_tokens)
        if len(full) > len(prefix) and not full.endswith(REPLACEMENT_CHAR):
            new_text = full[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.token_ids)
            start = max(0, len(self.text) - max((len(s) for s in self.stop), default=0) + 1)
            self.text += new_text
            return self._check_stop(start)
        return None

    def flush(self) -> None:
        """At finish: append whatever is left undecoded (an incomplete character shows as U+FFFD)."""
        if self.read_offset < len(self.token_ids):
            prefix = self.tokenizer.decode(self.token_ids[self.prefix_offset:self.read_offset],
                                           skip_special_tokens=self.skip_special_tokens)
            full = self.tokenizer.decode(self.token_ids[self.prefix_offset:],
                                         skip_special_tokens=self.skip_special_tokens)
            self.text += full[len(prefix):]
            self.read_offset = len(self.token_ids)

    def _check_stop(self, search_from: int) -> str | None:
        for s in self.stop:
            idx = self.text.find(s, search_from)
            if idx != -1:
                self.text = self.text[:idx + len(s)] if self.include_stop else self.text[:idx]
                return s
        return None

    def delta(self, finished: bool) -> str:
        """New text safe to show. While running, hold back a tail that may begin a stop string."""
        end = len(self.text)
        if not finished and self.stop:
            end = max(self.num_emitted_chars, end - self._held_back_chars())
        out = self.text[self.num_emitted_chars:end]
        self.num_emitted_chars = end
        return out

    def _held_back_chars(self) -> int:
        """Longest suffix of the text that is a proper prefix of some stop string."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:k]):
                    best = k
                    break
        return best
