"""The chat page in headless Chromium against a real `specdec serve` (bundled model, n-gram speculation):
the streamed answer equals the API's, accepted drafts are marked, Stop frees the request's KV blocks,
and server errors show in the page."""
import re

import httpx
import pytest

from tests.server_harness import ProcessServer
from tests.webui_harness import chromium

# a prompt that repeats itself, so n-gram drafts (copied from the context) get accepted
REPEAT = "Repeat this sentence three times: The quick brown fox jumps over the lazy dog."
MAX_TOKENS_LIMIT = 128


@pytest.fixture(scope="module")
def server():
    with ProcessServer(["--dtype", "float32", "--kv-cache-memory-mb", "64",
                        "--max-tokens-limit", str(MAX_TOKENS_LIMIT)]) as srv:
        yield srv


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-ready]")
        yield page


def health(server) -> dict:
    return httpx.get(server.url + "/health", timeout=10).json()


def finished_requests(server) -> float:
    """specdec:request_success_total over every finish reason (aborted requests are not counted)."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("specdec:request_success_total"))


def answer_text(msg):
    return msg.locator(".tok:not([data-draft=rejected])").evaluate_all("els => els.map(e => e.textContent).join('')")


def ask(page, text):
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def test_answer_streams_and_equals_the_api(page, server):
    page.click("#clear")
    page.fill("#max-tokens", "32")
    page.fill("#temperature", "0")
    # count how many separate DOM updates added tokens: a streamed answer arrives in several
    page.evaluate("""() => { window.tokenUpdates = 0;
        new MutationObserver(() => window.tokenUpdates++).observe(document.getElementById('messages'),
                                                                 {childList: true, subtree: true}); }""")
    ask(page, REPEAT)
    page.wait_for_selector(".msg.assistant[data-done]", timeout=120_000)
    msg = page.locator(".msg.assistant").last
    assert msg.locator(".error").count() == 0
    shown = answer_text(msg)
    api = server.openai_client().chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": REPEAT}], max_tokens=32,
        temperature=0, extra_body={"num_speculative_tokens": 4})
    assert shown == api.choices[0].message.content and shown
    assert page.evaluate("window.tokenUpdates") > 3
    assert msg.locator("[data-draft=accepted]").count() >= 1, "n-gram drafts of a repeated sentence get accepted"
    assert int(page.text_content("#stat-accepted")) >= 1
    assert float(page.text_content("#stat-tau")) > 1.0
    assert re.fullmatch(r"\d+ ms", page.text_content("#stat-ttft"))


def test_stop_aborts_the_server_request(page, server):
    page.click("#clear")
    page.fill("#max-tokens", str(MAX_TOKENS_LIMIT))
    before = finished_requests(server)
    ask(page, "Write a very long story about a dragon who learns to sail across the sea.")
    page.locator(".msg.assistant .tok").nth(2).wait_for(timeout=120_000)    # 3 tokens are on the page
    assert health(server)["kv_blocks_in_use"] > 0         # the request is running and holds blocks
    page.click("#stop")
    page.wait_for_selector(".msg.assistant[data-stopped]", timeout=10_000)
    assert page.text_content("#status") == "stopped"
    for _ in range(100):
        h = health(server)
        if h["kv_blocks_in_use"] == 0 and h["num_active_requests"] == 0:
            break
        page.wait_for_timeout(100)
    assert h["kv_blocks_in_use"] == 0 and h["num_running"] == 0 and h["num_active_requests"] == 0, h
    assert finished_requests(server) == before, "the request was aborted, not run to its end"
    assert page.locator(".msg.assistant .tok:not([data-draft=rejected])").count() < MAX_TOKENS_LIMIT
    assert not page.is_disabled("#send") and page.is_disabled("#stop")


def test_bad_schema_and_server_errors_show_in_the_page(page, server):
    page.click("#clear")
    page.fill("#schema", '{"type": "object", "properties": ')
    ask(page, "hi")
    assert "JSON schema is not valid JSON" in page.locator(".error").last.text_content()
    assert page.locator(".msg.assistant").count() == 0
    page.fill("#schema", "")
    page.fill("#max-tokens", str(MAX_TOKENS_LIMIT + 1))    # the server refuses it: 400 naming the field
    ask(page, "hi")
    page.wait_for_selector(".msg.assistant[data-done]")
    error = page.locator(".msg.assistant .error").last.text_content()
    assert "400" in error and f"max_tokens must be <= {MAX_TOKENS_LIMIT}" in error
    assert page.text_content("#status") == "error"


def test_json_schema_in_the_page_gives_a_json_answer(page, server):
    import json

    import jsonschema
    # bounded integer: an unbounded one lets a 135M model repeat digits past max_tokens
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16},
                                               "population": {"type": "integer", "minimum": 0,
                                                              "maximum": 99999999}},
              "required": ["city", "population"], "additionalProperties": False}
    page.click("#clear")
    page.fill("#max-tokens", "40")
    page.fill("#temperature", "0")
    page.fill("#schema", json.dumps(schema))
    try:
        ask(page, "Give the largest city of Japan and its population.")
        page.wait_for_selector(".msg.assistant[data-done]", timeout=120_000)
    finally:
        page.fill("#schema", "")
    msg = page.locator(".msg.assistant").last
    assert msg.locator(".error").count() == 0
    jsonschema.validate(json.loads(answer_text(msg)), schema)
