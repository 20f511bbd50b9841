"""build_app: the OpenAI-compatible FastAPI app over one engine.

    app = build_app(LLM().engine, ServerSettings(api_key="k"))   # or any engine with LLMEngine's surface

The engine thread starts with the app's lifespan and stops with it.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse

from server.async_engine import AsyncEngine
from server.chat import chat_response, chat_stream, start_chat
from server.completions import completion_response, completion_stream, start_completion
from server.convert import chat_prompt, check_model
from server.errors import bad_request, install_error_handlers
from server.generation import Generation
from server.metrics import ServerMetrics
from server.middleware import ServerMiddleware
from server.protocol import (ChatCompletionRequest, CompletionRequest, DetokenizeRequest, ModelCard, ModelList,
                             TokenizeRequest)
from server.responses import TokenText
from server.settings import ServerSettings
from server.state import ServerState
from server.webui import mount_webui

CLIENT_CLOSED = 499   # nginx's "client closed request": nobody reads it, the log does
SSE_PING_SECONDS = 15


def build_app(engine, settings: ServerSettings | None = None) -> FastAPI:
    """engine: an LLMEngine (or `LLM`, whose engine is used, or an object with the same surface)."""
    engine = getattr(engine, "engine", engine) if hasattr(engine, "chat") else engine
    settings = settings or ServerSettings()
    async_engine = AsyncEngine(engine)
    state = ServerState(async_engine, settings, ServerMetrics(async_engine, settings.served_model_name),
                        TokenText(engine.tokenizer))
    created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async_engine.start()
        try:
            yield
        finally:
            async_engine.fail_all("the server shut down", 503)
            async_engine.stop()

    app = FastAPI(title="specdec", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible API over specdec's speculative-decoding engine")
    app.state.server = state
    app.add_middleware(ServerMiddleware, state_getter=lambda: state)
    install_error_handlers(app)

    @app.post("/v1/chat/completions", response_model=None)
    async def create_chat_completion(req: ChatCompletionRequest, request: Request):
        gen = await start_chat(state, req)
        if req.stream:
            return EventSourceResponse(chat_stream(gen, req), sep="\n", ping=SSE_PING_SECONDS)
        return await _until_disconnect(request, gen, chat_response(gen, req))

    @app.post("/v1/completions", response_model=None)
    async def create_completion(req: CompletionRequest, request: Request):
        gen = await start_completion(state, req)
        if req.stream:
            return EventSourceResponse(completion_stream(gen, req), sep="\n", ping=SSE_PING_SECONDS)
        return await _until_disconnect(request, gen, completion_response(gen, req))

    @app.get("/v1/models")
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=settings.served_model_name, created=created,
                                         max_model_len=state.max_model_len)])

    @app.get("/health")
    async def health():
        body = {"status": "draining" if state.draining else "ok", **async_engine.stats(),
                "num_in_flight": state.num_in_flight}
        return JSONResponse(body, status_code=503 if state.draining else 200)

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/tokenize")
    async def tokenize(req: TokenizeRequest):
        check_model(req.model, settings)
        if (req.prompt is None) == (req.messages is None):
            raise bad_request("give exactly one of `prompt` or `messages`", "prompt")
        if req.messages is not None:
            ids = chat_prompt(state.tokenizer, req.messages).token_ids
        else:
            ids = state.tokenizer.encode(req.prompt, add_special_tokens=req.add_special_tokens)
        return {"tokens": ids, "count": len(ids), "max_model_len": state.max_model_len}

    @app.post("/detokenize")
    async def detokenize(req: DetokenizeRequest):
        check_model(req.model, settings)
        if any(not 0 <= t < state.vocab_size for t in req.tokens):
            raise bad_request(f"token ids must be in [0, {state.vocab_size})", "tokens")
        return {"prompt": state.tokenizer.decode(req.tokens)}

    mount_webui(app)   # the chat page at / (server/webui.py)
    return app


async def _until_disconnect(request: Request, gen: Generation, work):
    """Non-streaming: Starlette does not cancel a handler whose client left, so race the work
    against the disconnect message; if the client goes first, abort (frees its blocks)."""
    async def disconnected():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, watcher = asyncio.ensure_future(work), asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:        # the handler itself was cancelled (server shutdown)
        task.cancel()
        gen.close()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return JSONResponse(task.result().model_dump(exclude_none=True))
    task.cancel()
    gen.close()
    return Response(status_code=CLIENT_CLOSED)
