"""Engine outputs -> OpenAI response pieces: timings, usage, logprobs, the speculation trace."""
from __future__ import annotations

from specdec.outputs import Logprob, RequestOutput, SpecStep
from server.protocol import (ChoiceLogprobs, CompletionLogprobs, SpecTraceStep, Timings, TokenLogprob,
                             TopLogprob, Usage)


def timings(outs: list[RequestOutput]) -> Timings:
    """llama.cpp's `timings` over the finished choices of one response (one prompt or several)."""
    prompt_n = prompt_ms = 0.0
    seen_prompts: set[int] = set()
    predicted_n = draft_n = draft_acc = 0
    first_token = finished = None
    for out in outs:
        m, c = out.metrics, out.outputs[0]
        if id(out.prompt_token_ids) not in seen_prompts:
            seen_prompts.add(id(out.prompt_token_ids))
            prompt_n += len(out.prompt_token_ids) - m.num_cached_prompt_tokens
        start = m.first_scheduled_time if m.first_scheduled_time is not None else m.arrival_time
        if m.first_token_time is not None:
            prompt_ms = max(prompt_ms, (m.first_token_time - start) * 1000)
            first_token = m.first_token_time if first_token is None else min(first_token, m.first_token_time)
        if m.finished_time is not None:
            finished = m.finished_time if finished is None else max(finished, m.finished_time)
        predicted_n += len(c.token_ids)
        draft_n += m.num_drafted_tokens
        draft_acc += m.num_accepted_tokens
    predicted_ms = (finished - first_token) * 1000 if first_token is not None and finished is not None else 0.0
    per_second = predicted_n / (predicted_ms / 1000) if predicted_ms > 0 else 0.0
    return Timings(prompt_n=int(prompt_n), prompt_ms=round(prompt_ms, 3), predicted_n=predicted_n,
                   predicted_ms=round(predicted_ms, 3), predicted_per_second=round(per_second, 3),
                   draft_n=draft_n, draft_n_accepted=draft_acc)


def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


class TokenText:
    """Token id -> display text, cached (logprobs and traces name tokens one at a time)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._cache[token_id] = self.tokenizer.decode([token_id])
        return text


def chat_logprobs(lps: list[Logprob], text: TokenText) -> ChoiceLogprobs:
    content = []
    for lp in lps:
        tok = text(lp.token_id)
        top = [TopLogprob(token=text(t), logprob=v, bytes=list(text(t).encode()))
               for t, v in sorted(lp.top.items(), key=lambda kv: -kv[1])]
        content.append(TokenLogprob(token=tok, logprob=lp.logprob, bytes=list(tok.encode()), top_logprobs=top))
    return ChoiceLogprobs(content=content)


def completion_logprobs(lps: list[Logprob], text: TokenText, offset: int) -> CompletionLogprobs:
    out = CompletionLogprobs()
    for lp in lps:
        tok = text(lp.token_id)
        out.tokens.append(tok)
        out.token_logprobs.append(lp.logprob)
        out.top_logprobs.append({text(t): v for t, v in sorted(lp.top.items(), key=lambda kv: -kv[1])})
        out.text_offset.append(offset)
        offset += len(tok)
    return out


def spec_trace(steps: list[SpecStep], text: TokenText) -> list[SpecTraceStep]:
    return [SpecTraceStep(drafted=[text(t) for t in s.draft_token_ids], accepted=s.num_accepted,
                          bonus=text(s.bonus_token_id)) for s in steps]
