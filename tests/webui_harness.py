"""Browser tests of the chat page: Debian's chromium driven by Playwright (never a browser download),
and a scripted engine whose speculation trace the page must render exactly."""
from __future__ import annotations

import contextlib
import shutil
import time
from types import SimpleNamespace

import pytest

from specdec.outputs import CompletionOutput, RequestMetrics, RequestOutput, SpecStep

INSTALL = ("apt-get install -y --no-install-recommends chromium && "
           "pip install 'playwright==1.64.1' (never `playwright install`), or `make test` as root")
# as root Chromium needs --no-sandbox; the rest keeps it from calling out on a closed network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-quic",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium():
    """A headless Debian Chromium under Playwright; skips (with the install command) where absent."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip(f"Debian's chromium is not installed: {INSTALL}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"playwright (Python) is not installed: {INSTALL}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# ---- a scripted engine -------------------------------------------------------------------
# One verify step per engine step: (drafted token texts, accepted count, bonus text, content delta).
# The EOS bonus of the last step never reaches the content, as with a real engine.
SCRIPT = [
    ([], 0, "The", "The"),
    ([" cat", " sat", " in"], 2, " on", " cat sat on"),
    ([" a", " rug"], 0, " the", " the"),
    ([" mat", "."], 2, "<eos>", " mat."),
]
# what the page must show, in document order: (data-draft, text)
EXPECTED = [("target", "The"), ("accepted", " cat"), ("accepted", " sat"), ("bonus", " on"),
            ("rejected", " in"), ("bonus", " the"), ("rejected", " a"), ("rejected", " rug"),
            ("accepted", " mat"), ("accepted", ".")]
FAIL_WORD = "explode"       # a prompt containing it makes the engine step raise mid-answer


class ScriptedTokenizer:
    chat_template = "scripted"

    def __init__(self):
        texts = sorted({t for d, _, b, _ in SCRIPT for t in [*d, b]})
        self.vocab = ["<unk>", *texts]
        self.ids = {t: i for i, t in enumerate(self.vocab)}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def encode(self, text, add_special_tokens=False):
        return [0] * max(1, len(text.split()))

    def decode(self, ids, **kw):
        return "".join(self.vocab[i] for i in ids)


class ScriptedEngine:
    """The engine surface build_app needs (see server/async_engine.py), replaying SCRIPT per request."""

    def __init__(self, step_delay: float = 0.15):
        self.tokenizer = ScriptedTokenizer()
        self.max_model_len = 4096
        self.model_config = SimpleNamespace(vocab_size=len(self.tokenizer.vocab))
        self.scheduler = SimpleNamespace(running=[], waiting=[])
        self.block_manager = SimpleNamespace(num_blocks=64, num_free_blocks=64)
        self.requests: dict[str, dict] = {}
        self.step_delay = step_delay

    def add_request(self, request_id, prompt_ids, params, prompt=None):
        self.requests[request_id] = dict(prompt=prompt or "", ids=prompt_ids, pos=0, tokens=[], text="",
                                         metrics=RequestMetrics(arrival_time=time.time()))
        self.scheduler.running = list(self.requests)

    def abort_request(self, request_id):
        self.requests.pop(request_id, None)
        self.scheduler.running = list(self.requests)

    def has_unfinished_requests(self):
        return bool(self.requests)

    def step(self):
        time.sleep(self.step_delay)            # so the page sees the answer arrive step by step
        outs = []
        for rid, r in list(self.requests.items()):
            if FAIL_WORD in r["prompt"] and r["pos"] == 1:
                raise RuntimeError("scripted failure")
            drafted, accepted, bonus, delta = SCRIPT[r["pos"]]
            r["pos"] += 1
            ids = self.tokenizer.ids
            new = [ids[t] for t in drafted[:accepted]] + [ids[bonus]]
            m = r["metrics"]
            now = time.time()
            m.first_scheduled_time = m.first_scheduled_time or now
            m.first_token_time = m.first_token_time or now
            m.token_times += [now] * len(new)
            m.num_forwards += 1
            m.num_drafted_tokens += len(drafted)
            m.num_accepted_tokens += accepted
            r["tokens"] += new
            r["text"] += delta
            finished = r["pos"] == len(SCRIPT)
            if finished:
                m.finished_time = now
                del self.requests[rid]
            c = CompletionOutput(index=0, text=r["text"], token_ids=list(r["tokens"]),
                                 finish_reason="stop" if finished else None, delta_text=delta,
                                 delta_token_ids=new,
                                 spec_steps=[SpecStep([ids[t] for t in drafted], accepted, ids[bonus])])
            outs.append(RequestOutput(rid, r["prompt"], r["ids"], [c], finished, m))
        self.scheduler.running = list(self.requests)
        return outs
