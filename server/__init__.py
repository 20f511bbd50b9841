"""OpenAI-compatible HTTP server over the specdec engine (FastAPI + uvicorn + sse-starlette)."""
from server.app import build_app
from server.settings import ServerSettings

__all__ = ["build_app", "ServerSettings"]
