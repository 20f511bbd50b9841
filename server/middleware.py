"""ASGI middleware: API key, body size limit, error-status counting. Runs before routing,
so a request without the key is refused before its body is even read."""
from __future__ import annotations

import hmac
import json

from starlette.exceptions import HTTPException

from server.errors import error_body

PROTECTED_PREFIXES = ("/v1/", "/tokenize", "/detokenize")


async def _send_error(send, status: int, message: str, code: str | None) -> None:
    body = json.dumps(error_body(status, message, None, code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ServerMiddleware:
    def __init__(self, app, state_getter):
        self.app = app
        self.state_getter = state_getter     # the ServerState is created after the middleware stack

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = self.state_getter()
        settings = state.settings
        headers = dict(scope.get("headers") or [])
        if settings.api_key is not None and scope["path"].startswith(PROTECTED_PREFIXES):
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                     settings.api_key.encode()):
                state.metrics.http_errors.labels(state.metrics.model_name, "401").inc()
                return await _send_error(send, 401, "invalid or missing API key (Authorization: Bearer <key>)",
                                         "invalid_api_key")
        limit = settings.max_body_bytes
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            state.metrics.http_errors.labels(state.metrics.model_name, "413").inc()
            return await _send_error(send, 413, f"request body is larger than {limit} bytes", "body_too_large")
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:     # chunked bodies carry no content-length
                    raise HTTPException(413, f"request body is larger than {limit} bytes")
            return message

        async def counting_send(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                state.metrics.http_errors.labels(state.metrics.model_name, str(message["status"])).inc()
            await send(message)

        await self.app(scope, limited_receive, counting_send)
