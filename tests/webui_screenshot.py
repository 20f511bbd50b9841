"""Screenshot of the chat page mid-answer with speculation on (docs/webui.png).

    python -m tests.webui_screenshot [docs/webui.png]

Starts `specdec serve` (bundled model, n-gram speculation) on a free loopback port, asks for a
repeated sentence and captures the page once some tokens are in, while the answer still streams.
"""
from __future__ import annotations

import sys

from tests.server_harness import ProcessServer
from tests.webui_harness import chromium

PROMPT = "Write the sentence 'Fast models check drafts in parallel.' five times, one per line."


def main(out: str = "docs/webui.png", tokens_before_shot: int = 45) -> None:
    with ProcessServer(["--dtype", "float32", "--kv-cache-memory-mb", "64"]) as srv, chromium() as browser:
        page = browser.new_page(viewport={"width": 1180, "height": 720})
        page.goto(srv.url + "/")
        page.wait_for_selector("body[data-ready]")
        page.fill("#system", "You are a helpful assistant.")
        page.fill("#max-tokens", "200")
        page.fill("#prompt", PROMPT)
        page.press("#prompt", "Enter")
        page.locator(".msg.assistant .tok").nth(tokens_before_shot - 1).wait_for(timeout=120_000)
        page.screenshot(path=out)
        page.click("#stop")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
