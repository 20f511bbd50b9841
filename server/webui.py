"""The chat page at `/`: static files shipped in server/static (plain HTML, CSS and ES modules).

No build step and nothing fetched from elsewhere at run time; the Content-Security-Policy
below makes the browser refuse anything that is not served by this server itself.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")
# 'self' only: the page talks to this server's /v1 API and loads its own modules, nothing else
CSP = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


def mount_webui(app: FastAPI) -> None:
    """Serve index.html at `/` and its modules / stylesheet under `/static/`."""
    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="webui-static")
