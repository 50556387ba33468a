"""The floor for the capacity bench: the least a Python relay of ``/story/stream`` costs.

    uvicorn --app-dir bench _floor_app:app_factory --factory

A bare Starlette app on the same uvicorn, with one shared ``httpx.AsyncClient``: it sends
the upstream (MARITACA_BASE_URL, MARITACA_API_KEY) one streaming chat completion, takes
each chunk's ``choices[0].delta.content`` and writes it framed the way LangServe's
``/stream`` is (sse-starlette: ``event: data`` per text chunk, ``event: end`` last). No
LangChain, no LangServe, no middleware, no run bookkeeping: what the platform
(uvicorn, Starlette, httpx, the event loop) costs per chunk, so the bench can say how
far our server is from it. Not a server to deploy: no validation, no limits, no errors
beyond an ``event: error`` for an upstream that does not answer 200.

``BENCH_FLOOR_MAX_CONNECTIONS`` caps its upstream pool (default 2000, no cap in practice):
httpx looks at every pooled connection for every request, so the relay's CPU per request
grows with the connections it holds (BENCHMARKS.md, issue 26, eighth pass), and a cap
holds it at its cheapest.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import anyio
import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

DEFAULT_MAX_TOKENS = 300  # what the story chain asks for when the client sets none
MESSAGES = [{"role": "system", "content": "Conte uma história original."},
            {"role": "user", "content": "Tema: Brasil"}]


class Relay(StreamingResponse):
    """Closes its body (and so the upstream response) when the stream ends, however it
    ends: Starlette leaves a generator whose client hung up to the garbage collector."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]


def app_factory() -> Starlette:
    """For ``uvicorn _floor_app:app_factory --factory``."""
    base_url = os.environ["MARITACA_BASE_URL"].rstrip("/")
    headers = {"Authorization": f"Bearer {os.environ['MARITACA_API_KEY']}"}
    client = httpx.AsyncClient(timeout=httpx.Timeout(120, connect=10), limits=httpx.Limits(
        max_connections=int(os.environ.get("BENCH_FLOOR_MAX_CONNECTIONS", "2000")),
        max_keepalive_connections=200, keepalive_expiry=30))

    async def relay(max_tokens: int) -> AsyncIterator[bytes]:
        body = {"model": "sabia-4", "messages": MESSAGES, "max_tokens": max_tokens,
                "stream": True, "stream_options": {"include_usage": True}}
        async with client.stream("POST", f"{base_url}/chat/completions", json=body,
                                 headers=headers) as upstream:
            if upstream.status_code != 200:
                yield b'event: error\r\ndata: {"status_code": 502}\r\n\r\n'
                return
            async for line in upstream.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = orjson.loads(line[6:]).get("choices")
                text = choices[0]["delta"].get("content") if choices else None
                if text:
                    yield b"event: data\r\ndata: " + orjson.dumps(text) + b"\r\n\r\n"
        yield b"event: end\r\n\r\n"

    async def stream(request: Request) -> Relay:
        payload = await request.json()
        configurable = (payload.get("config") or {}).get("configurable") or {}
        return Relay(relay(configurable.get("max_tokens") or DEFAULT_MAX_TOKENS),
                     media_type="text/event-stream",
                     headers={"Cache-Control": "no-cache", "Connection": "keep-alive",
                              "X-Accel-Buffering": "no"})

    async def healthz(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with client:
            yield

    return Starlette(routes=[Route("/story/stream", stream, methods=["POST"]),
                             Route("/healthz", healthz)], lifespan=lifespan)
