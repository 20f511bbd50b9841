"""Admission (queue, then 503) and engine failures (error event / 500), with a custom engine object."""
import threading

import httpx
import openai
import pytest

from server import ServerSettings, build_app
from server.threaded import ThreadServer
from specdec import LLM

LONG = dict(max_tokens=300, temperature=0.8, extra_body={"ignore_eos": True})


class FlakyEngine:
    """Wraps an LLMEngine; `step` raises while `fail` is set (what a custom engine looks like to build_app)."""

    def __init__(self, engine):
        self._engine = engine
        self.fail = threading.Event()

    def step(self):
        if self.fail.is_set():
            raise RuntimeError("injected failure")
        return self._engine.step()

    def __getattr__(self, name):
        return getattr(self._engine, name)


@pytest.fixture(scope="module")
def flaky(tiny_model_dir):
    return FlakyEngine(LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=256).engine)


@pytest.fixture(scope="module")
def server(flaky):
    with ThreadServer(build_app(flaky, ServerSettings(served_model_name="tiny", max_pending_requests=2))) as srv:
        yield srv


def test_full_queue_gets_503_then_recovers(server):
    client = server.openai_client()
    streams = [client.completions.create(model="tiny", prompt=f"p{i}", stream=True, **LONG) for i in range(2)]
    first = [next(iter(s)) for s in streams]         # both admitted and producing
    assert all(c.choices for c in first)
    with pytest.raises(openai.InternalServerError) as e:
        client.completions.create(model="tiny", prompt="one too many", max_tokens=2)
    assert e.value.status_code == 503 and e.value.body["code"] == "overloaded"
    for s in streams:
        s.close()
    server.wait_idle()
    assert client.completions.create(model="tiny", prompt="again", max_tokens=2).choices[0].text is not None


def test_engine_failure_is_an_error_event_or_500_and_the_server_survives(server, flaky):
    client = server.openai_client()
    stream = client.chat.completions.create(model="tiny", stream=True,
                                            messages=[{"role": "user", "content": "hi"}], **LONG)
    it = iter(stream)
    next(it)                                   # headers and the role chunk are out
    flaky.fail.set()
    try:
        with pytest.raises(openai.APIError) as e:
            for _ in it:
                pass
        assert "injected failure" in str(e.value)
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert "injected failure" in e.value.body["message"]
    finally:
        flaky.fail.clear()
    assert server.wait_idle()["kv_blocks_in_use"] == 0
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert r.choices[0].finish_reason == "length"
    # the raw stream of a failure ends with [DONE] after the error event
    flaky.fail.set()
    try:
        with httpx.stream("POST", f"{server.url}/v1/completions", timeout=30,
                          json={"prompt": "x", "max_tokens": 5, "stream": True}) as resp:
            lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    finally:
        flaky.fail.clear()
    assert '"error"' in lines[-2] and lines[-1] == "data: [DONE]"
