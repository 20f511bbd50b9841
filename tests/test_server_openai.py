"""The server with the official `openai` client, on the real bundled model (fp32, n-gram speculation)."""
import httpx
import openai
import pytest

from server import ServerSettings, build_app
from specdec import LLM, SamplingParams
from tests.server_harness import ThreadServer

API_KEY = "test-key"
SPEC = {"method": "ngram", "num_speculative_tokens": 4, "adaptive": False}  # always draft
ENGINE_ARGS = dict(dtype="float32", speculative_config=SPEC, kv_cache_memory=64 * 2**20)
HI = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def server():
    llm = LLM(**ENGINE_ARGS)
    app = build_app(llm, ServerSettings(api_key=API_KEY, max_tokens_limit=256))
    with ThreadServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.openai_client(api_key=API_KEY)


def chat(client, **kw):
    args = dict(model="SmolLM2-135M-Instruct", messages=HI, max_tokens=12, temperature=0)
    args.update(kw)
    return client.chat.completions.create(**args)


def test_non_streaming_chat(client):
    r = chat(client)
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content
    assert c.finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert 0 < r.usage.completion_tokens <= 12
    t = r.model_extra["timings"]
    assert t["predicted_n"] == r.usage.completion_tokens and t["predicted_ms"] >= 0
    assert {"prompt_n", "prompt_ms", "predicted_per_second", "draft_n", "draft_n_accepted"} <= set(t)


def test_streaming_equals_non_streaming(client):
    whole = chat(client).choices[0]
    chunks = list(chat(client, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.finish_reason]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.message.content
    assert "timings" in chunks[-1].model_extra


def test_include_usage(client):
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    ntext = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert last.usage.completion_tokens >= ntext
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_n2_streaming_and_not(client):
    r = chat(client, n=2, temperature=0.9, seed=3)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage.completion_tokens == r.model_extra["timings"]["predicted_n"]
    seen = {c.choices[0].index for c in chat(client, n=2, temperature=0.9, seed=3, stream=True) if c.choices}
    assert seen == {0, 1}


def test_logprobs(client):
    r = chat(client, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for lp in content:
        assert lp.logprob <= 0 and len(lp.top_logprobs) == 3
        assert [t.logprob for t in lp.top_logprobs] == sorted((t.logprob for t in lp.top_logprobs), reverse=True)
        # greedy: the emitted token is the most likely one
        assert lp.token == lp.top_logprobs[0].token
    streamed = [lp for c in chat(client, logprobs=True, top_logprobs=1, stream=True)
                if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.content]
    assert [lp.token for lp in streamed] == [lp.token for lp in content]


def test_stop_string(client):
    full = chat(client, max_tokens=16).choices[0].message.content
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    cut = full[:full.index(stop)]
    for stream in (False, True):
        if stream:
            chunks = list(chat(client, max_tokens=16, stop=[stop], stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            reason = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            assert reason == ["stop"]
        else:
            r = chat(client, max_tokens=16, stop=[stop]).choices[0]
            text, reason = r.message.content, r.finish_reason
            assert reason == "stop"
        assert text == cut


def test_server_text_equals_llm_chat(client):
    """Same greedy request, same engine config: the server's text is LLM.chat's text."""
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]
    ref = LLM(**ENGINE_ARGS).chat(msgs, SamplingParams(temperature=0.0, max_tokens=24))[0].outputs[0]
    r = chat(client, messages=msgs, max_tokens=24)
    assert r.choices[0].message.content == ref.text
    assert r.usage.completion_tokens == len(ref.token_ids)


def _nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_bad_requests_have_status_and_openai_shape(client, server):
    cases = [
        (openai.NotFoundError, 404, dict(model="no-such-model"), "model"),
        (openai.BadRequestError, 400, dict(temperature="hot"), "temperature"),
        (openai.BadRequestError, 400, dict(max_tokens=10**6), "max_tokens"),
        (openai.BadRequestError, 400, dict(max_tokens=0), "max_tokens"),
        (openai.BadRequestError, 400, dict(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role"),
        (openai.BadRequestError, 400, dict(n=100), "n"),
        (openai.BadRequestError, 400, dict(top_logprobs=2), "top_logprobs"),
        (openai.BadRequestError, 400, dict(logit_bias={"99999999": 1}), "logit_bias"),
        (openai.BadRequestError, 400, dict(response_format={"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "nonsense"}}}), "response_format"),
        (openai.BadRequestError, 400, dict(messages=[{"role": "user", "content": "hello " * 9000}]), "messages"),
        (openai.BadRequestError, 400, dict(response_format={"type": "json_schema", "json_schema": {
            "name": "deep", "schema": _nested(40)}}), "response_format.json_schema.schema"),
    ]
    for exc, status, kw, param in cases:
        for stream in (False, True):       # errors come before any SSE header, so streams raise too
            with pytest.raises(exc) as e:
                r = chat(client, stream=stream, **kw)
                list(r) if stream else None
            assert e.value.status_code == status, kw
            assert e.value.body["type"] and e.value.body["message"], kw
            assert e.value.body["param"] == param, (kw, e.value.body)
    with pytest.raises(openai.AuthenticationError) as e:
        chat(server.openai_client(api_key="wrong-key"))
    assert e.value.status_code == 401 and e.value.body["type"] == "authentication_error"
    # raw HTTP: the body is OpenAI's shape, never FastAPI's 422 {"detail": ...}
    raw = httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                     content=b'{"messages": "not a list"}')
    assert raw.status_code == 400 and set(raw.json()["error"]) == {"message", "type", "param", "code"}
    big = httpx.post(f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                     content=b"x" * (5 * 2**20))
    assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"
    assert chat(client).choices[0].message.content      # and the server still serves


def test_completions_models_tokenize(client, server):
    r = client.completions.create(model="SmolLM2-135M-Instruct", prompt="The capital of France is",
                                  max_tokens=6, temperature=0, echo=True, logprobs=2)
    assert r.choices[0].text.startswith("The capital of France is")
    assert len(r.choices[0].logprobs.tokens) == r.usage.completion_tokens
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="SmolLM2-135M-Instruct", prompt="The capital of France is", max_tokens=6, temperature=0,
        stream=True) if c.choices)
    assert r.choices[0].text == "The capital of France is" + streamed
    assert [m.id for m in client.models.list().data] == ["SmolLM2-135M-Instruct"]
    h = {"Authorization": f"Bearer {API_KEY}"}
    toks = httpx.post(f"{server.url}/tokenize", json={"prompt": "hello world"}, headers=h).json()
    assert toks["count"] == len(toks["tokens"]) > 0
    back = httpx.post(f"{server.url}/detokenize", json={"tokens": toks["tokens"]}, headers=h).json()
    assert back["prompt"] == "hello world"


def test_spec_trace_and_metrics(client, server):
    prompt = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,"
    chunks = list(client.completions.create(model="SmolLM2-135M-Instruct", prompt=prompt, max_tokens=40,
                                            temperature=0, stream=True,
                                            stream_options={"include_spec_trace": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    steps = [s for c in chunks for s in (c.model_extra.get("spec_trace") or [])]
    assert steps and all(0 <= s["accepted"] <= len(s["drafted"]) for s in steps)
    assert any(s["accepted"] > 0 for s in steps), "n-gram drafts on a counting prompt must get accepted"
    # every step emits its accepted drafts plus the bonus; the last step may be cut by max_tokens
    traced = "".join("".join(s["drafted"][:s["accepted"]]) + s["bonus"] for s in steps)
    assert traced.startswith(text) and text
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][0].model_extra["timings"]
    assert final["draft_n_accepted"] == sum(s["accepted"] for s in steps)
    metrics = httpx.get(f"{server.url}/metrics").text
    accepted = [line for line in metrics.splitlines()
                if line.startswith("specdec:spec_decode_num_accepted_tokens_total")]
    assert accepted and float(accepted[0].split()[-1]) > 0
    for name in ("time_to_first_token_seconds_bucket", "inter_token_latency_seconds_bucket",
                 "e2e_request_latency_seconds_bucket", "time_per_output_token_seconds_bucket",
                 "kv_cache_usage_perc", "running", "waiting", "spec_decode_num_accepted_tokens_per_pos"):
        assert f"specdec:{name}" in metrics, name
    assert server.wait_idle()["kv_blocks_in_use"] == 0
