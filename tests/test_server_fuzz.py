"""Schemathesis over the OpenAPI schema against a live server (tiny model): no 5xx, no hang."""
import pytest

from evals.api_fuzz import fuzz_settings, run_fuzz
from server import build_app
from specdec import LLM
from tests.server_harness import ThreadServer


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    llm = LLM(model=tiny_model_dir, dtype="float32", num_kv_blocks=256,
              speculative_config={"method": "ngram", "num_speculative_tokens": 3})
    with ThreadServer(build_app(llm, fuzz_settings())) as srv:
        yield srv


def test_fuzzed_requests_get_no_5xx_and_no_hang(server):
    report = run_fuzz(server.url, examples=15, seed=0, max_time=240, request_timeout=30)
    # 7 operations x (positive + negative) x 15 examples, minus what hypothesis deduplicates
    assert report.num_requests >= 100, report.as_dict()
    assert report.findings == [], report.as_dict()
    assert report.by_status.get(200, 0) > 0 and report.by_status.get(400, 0) > 0, report.as_dict()
    assert server.wait_idle()["kv_blocks_in_use"] == 0
