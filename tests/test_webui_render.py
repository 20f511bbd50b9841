"""The chat page in headless Chromium over a scripted engine: exact rendering of accepted, bonus,
target and rejected tokens, the live numbers, errors, reasoning and tool calls."""
import json

import httpx
import pytest

from server import ServerSettings, build_app
from server.threaded import ThreadServer
from tests.webui_harness import EXPECTED, FAIL_WORD, ScriptedEngine, chromium

ANSWER = "The cat sat on the mat."


@pytest.fixture(scope="module")
def server():
    with ThreadServer(build_app(ScriptedEngine(), ServerSettings(served_model_name="scripted"))) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    page = ctx.new_page()
    page.requests = []
    page.on("request", lambda r: page.requests.append(r.url))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready]")
    yield page
    ctx.close()


def send(page, text):
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    page.wait_for_selector(".msg.assistant[data-done]")
    return page.locator(".msg.assistant").last


def answer_text(msg):
    return msg.locator(".tok:not([data-draft=rejected])").evaluate_all("els => els.map(e => e.textContent).join('')")


def tokens(msg):
    return msg.locator(".tok").evaluate_all("els => els.map(e => [e.dataset.draft, e.textContent])")


def test_page_is_served_with_its_modules(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    js = httpx.get(server.url + "/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert httpx.get(server.url + "/static/nope.js").status_code == 404


def test_scripted_trace_renders_exactly(page, server):
    msg = send(page, "tell me about the cat")
    assert [tuple(t) for t in tokens(msg)] == EXPECTED
    assert answer_text(msg) == ANSWER
    # rejected drafts are ghosted, and the toggle hides them without touching the answer
    assert float(msg.locator("[data-draft=rejected]").first.evaluate("e => getComputedStyle(e).opacity")) < 1
    page.uncheck("#show-rejected")
    assert msg.locator("[data-draft=rejected]").count() == 3
    assert all(not el.is_visible() for el in msg.locator("[data-draft=rejected]").all())
    assert msg.locator(".answer").inner_text() == ANSWER
    # live numbers: 4 steps made 1+3+1+3 tokens; drafted 0+3+2+2, accepted 0+2+0+2
    assert page.text_content("#stat-drafted") == "7" and page.text_content("#stat-accepted") == "4"
    assert page.text_content("#stat-tau") == "2.00" and page.text_content("#stat-rate") == "57%"
    assert page.text_content("#stat-ttft").endswith("ms")
    bars = page.locator("#accept-chart .bar").evaluate_all(
        "els => els.map(e => [e.dataset.accepted, e.dataset.drafted])")
    assert bars == [["0", "0"], ["2", "3"], ["0", "2"], ["2", "2"]]
    assert page.text_content("#status") == "done (stop)"
    # nothing but this server was contacted
    assert page.requests and all(u.startswith(server.url) for u in page.requests)


def test_request_carries_the_settings_and_keyboard_works(page, server):
    page.fill("#system", "Be brief.")
    page.fill("#temperature", "0.5")
    page.fill("#max-tokens", "17")
    page.fill("#draft-tokens", "3")
    page.fill("#prompt", "line one")
    page.press("#prompt", "Shift+Enter")         # a new line, not a send
    page.type("#prompt", "line two")
    assert page.locator(".msg").count() == 0 and page.input_value("#prompt") == "line one\nline two"
    with page.expect_request("**/v1/chat/completions") as req:
        page.press("#prompt", "Enter")
    body = json.loads(req.value.post_data)
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "line one\nline two"}]
    assert body["temperature"] == 0.5 and body["max_tokens"] == 17 and body["num_speculative_tokens"] == 3
    assert body["stream"] is True and body["stream_options"]["include_spec_trace"] is True
    page.wait_for_selector(".msg.assistant[data-done]")
    # speculation off -> 0 (plain decoding for this request); the history goes with the next turn
    page.uncheck("#speculation")
    with page.expect_request("**/v1/chat/completions") as req:
        send(page, "again")
    body = json.loads(req.value.post_data)
    assert body["num_speculative_tokens"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][2]["content"] == ANSWER


def test_errors_show_in_the_page(page, server):
    page.fill("#schema", '{"type": "object",')            # not JSON: refused before sending
    page.fill("#prompt", "hi")
    page.press("#prompt", "Enter")
    assert "JSON schema is not valid JSON" in page.locator(".error").last.text_content()
    assert page.locator(".msg.assistant").count() == 0
    page.fill("#schema", "")
    page.fill("#max-tokens", "0")
    page.fill("#prompt", "hi")
    page.press("#prompt", "Enter")
    assert "max tokens" in page.locator(".error").last.text_content()
    # an error inside the stream (the engine fails mid-answer) becomes a message, not a blank page
    page.fill("#max-tokens", "20")
    msg = send(page, f"please {FAIL_WORD}")
    assert "scripted failure" in msg.locator(".error").text_content()
    assert page.text_content("#status") == "error"
    assert server.wait_idle()["num_active_requests"] == 0


def test_reasoning_and_tool_calls(page):
    # the scripted engine has no tool parser, so this stream is served by the browser route
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "The user wants "}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "<b>weather</b>."}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    page.route("**/v1/chat/completions", lambda r: r.fulfill(status=200, body=body,
                                                             headers={"content-type": "text/event-stream"}))
    page.fill("#tools", '[{"type": "function", "function": {"name": "get_weather"}}]')
    msg = send(page, "weather in Paris?")
    reasoning = msg.locator("details.reasoning")
    assert reasoning.is_visible() and reasoning.get_attribute("open") is None     # collapsed
    assert reasoning.locator("pre").text_content() == "The user wants <b>weather</b>."   # text, not HTML
    assert msg.locator(".tool-call").inner_text() == 'get_weather({"city": "Paris"})'
    assert page.text_content("#status") == "done (tool_calls)"


def test_narrow_window(browser, server):
    ctx = browser.new_context(viewport={"width": 380, "height": 700})
    page = ctx.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready]")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 380, f"the page overflows a 380 px window ({width} px)"
    msg = send(page, "hi")
    assert answer_text(msg) == ANSWER
    assert page.locator("#send").is_visible() and page.locator("#stop").is_visible()
    ctx.close()
