"""The ASGI side of the lifecycle: the probes, and every request and WebSocket session
registered with the ``Drain`` so it can finish, or end with a named error.

``LifecycleMiddleware`` goes outermost (``add_lifecycle``): ``/livez`` and ``/readyz``
are answered before any access rule. While draining, responses say
``Connection: close`` (a proxy's next request goes to another replica) and a WebSocket
session is closed (1012, service restart) as soon as it has no run in flight, and the
Gradio UI's heartbeat stream (open as long as a tab is) ends at once. When the
drain time is up, what is left ends with ``server_shutting_down`` in its own protocol:

- not yet answered: ``503 {"detail", "type": "server_shutting_down"}``;
- SSE (``/stream``, ``/stream_events``, a run's events): an ``error`` event
  ``{"status_code": 503, "type": "server_shutting_down", "message"}``, then the end;
  on ``/v1`` OpenAI's ``data: {"error": {...}}`` (the SDKs raise on it), on the AI SDK
  face an ``error`` part (``x-vercel-ai-ui-message-stream``) and ``[DONE]``;
- plain text (``/text``): the line ``[ERROR] ... (server_shutting_down) ...``;
- WebSocket: ``[ERROR] {"status_code": 503, "type": "server_shutting_down", ...}`` and
  ``[END]`` for every input not yet answered, then close 1012.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import suppress
from typing import Any

from ..error_responses import ERROR_MARK
from ..faces.websocket import END, is_stop
from .drain import SHUTTING_DOWN, Drain, InFlight
from .probes import LIVE_PATH, READY_PATH, Readiness

__all__ = ["SHUTDOWN_MESSAGE", "LifecycleMiddleware", "shutdown_error"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

SHUTDOWN_MESSAGE = ("The server is shutting down (server_shutting_down) before this answer "
                    "ended; send the request again: another replica will answer.")
QUEUE_FULL = "queue_full"  # the WebSocket face's refusal of an input beyond its queue
_RESTART_CLOSE = 1012  # WebSocket close code: service restart (reconnect and resend)
_MAX_WS_TAILS = 100
# the Gradio UI's "this tab is open" stream (/ui/gradio_api/heartbeat/<session>): it lasts
# as long as the page, so the drain ends it at once instead of waiting for it
_HEARTBEAT = "/gradio_api/heartbeat/"


def shutdown_error() -> dict[str, Any]:
    """The error every face reports for what the drain had to cut."""
    return {"status_code": 503, "type": SHUTTING_DOWN, "message": SHUTDOWN_MESSAGE}


def _media_type(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";")[0].strip().lower().decode("latin-1")
    return ""


class LifecycleMiddleware:
    """Pure ASGI: probes, and the drain's bookkeeping (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, drain: Drain, readiness: Readiness) -> None:
        self.app, self.drain, self.readiness = app, drain, readiness

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if scope["path"] in (LIVE_PATH, READY_PATH) and scope["method"] in ("GET", "HEAD"):
                await self._probe(scope, send)
            else:
                await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _probe(self, scope: Scope, send: Any) -> None:
        ready = scope["path"] == LIVE_PATH or await self.readiness.why_not() is None
        body = b'{"status":"ok"}' if ready else b'{"status":"unavailable"}'
        await send({"type": "http.response.start", "status": 200 if ready else 503,
                    "headers": [(b"content-type", b"application/json"),
                                (b"cache-control", b"no-store"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body",
                    "body": b"" if scope["method"] == "HEAD" else body})

    async def _http(self, scope: Scope, receive: Any, send: Any) -> None:
        item = InFlight("heartbeat" if _HEARTBEAT in scope["path"] else "http")
        if item.kind == "heartbeat" and self.drain.draining:
            item.stop("idle")  # a page reconnecting to a replica that is leaving
        started = ended = False
        media = ""

        async def tracked_send(message: Message) -> None:
            nonlocal started, ended, media
            if item.cut is not None:  # cut: what the app says while unwinding (LangServe's
                return                # generic 500 event) stays unsaid; the tail says why
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                media = _media_type(headers)
                if media == "text/event-stream":
                    media = _sse_dialect(scope["path"], headers)
                if self.drain.draining:  # the proxy's next request goes elsewhere
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                ended = True
            await send(message)

        self.drain.add(item)
        try:
            with item.cancel_scope:
                await self.app(scope, receive, tracked_send)
            if item.cut is not None and not ended:
                with suppress(Exception):  # the client may be gone already
                    await _end_http(send, started, media if item.cut == "expired" else "")
        finally:
            self.drain.discard(item)

    async def _websocket(self, scope: Scope, receive: Any, send: Any) -> None:
        item = InFlight("websocket")
        accepted = closed = False

        async def tracked_receive() -> Message:
            message: Message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
                if not is_stop(text):
                    item.pending += 1
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal accepted, closed
            if item.cut is not None:
                return
            kind = message["type"]
            if kind == "websocket.accept":
                accepted = True
            elif kind in ("websocket.close", "websocket.http.response.start"):
                closed = True
            await send(message)
            if kind == "websocket.send" and _answers_an_input(message.get("text")):
                item.pending -= 1
                if item.pending <= 0 and self.drain.draining:
                    item.stop("idle")  # answered all it was sent: reconnect elsewhere

        self.drain.add(item)
        try:
            with item.cancel_scope:
                await self.app(scope, tracked_receive, tracked_send)
            if item.cut is not None and accepted and not closed:
                with suppress(Exception):
                    await _end_websocket(send, item)
        finally:
            self.drain.discard(item)


def _answers_an_input(text: str | None) -> bool:
    """Whether this WebSocket frame settles an input: ``[END]`` after a run, or the
    ``queue_full`` refusal of one that was never queued (it gets no ``[END]``)."""
    if text == END:
        return True
    if text is None or not text.startswith(f"{ERROR_MARK} {{"):
        return False
    try:
        return bool(json.loads(text[len(ERROR_MARK) + 1:]).get("type") == QUEUE_FULL)
    except (ValueError, AttributeError):
        return False


_OPENAI_SSE, _AI_SDK_SSE = "sse/openai", "sse/ai-sdk"  # event streams of other protocols


def _sse_dialect(path: str, headers: list[tuple[bytes, bytes]]) -> str:
    """Which protocol an event stream speaks: OpenAI's (``/v1``), the AI SDK's (its
    header), or LangServe's SSE events."""
    if any(name.lower() == b"x-vercel-ai-ui-message-stream" for name, _ in headers):
        return _AI_SDK_SSE
    return _OPENAI_SSE if path.startswith("/v1/") else "text/event-stream"


async def _end_http(send: Any, started: bool, media: str) -> None:
    error = shutdown_error()
    if not started:
        body = json.dumps({"detail": error["message"], "type": SHUTTING_DOWN}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"retry-after", b"1"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
        return
    if media == "text/event-stream":
        tail = f"event: error\r\ndata: {json.dumps(error)}\r\n\r\n".encode()
    elif media == _OPENAI_SSE:
        tail = b"data: " + json.dumps({"error": {
            "message": error["message"], "type": "server_error", "param": None,
            "code": SHUTTING_DOWN}}).encode() + b"\n\n"
    elif media == _AI_SDK_SSE:
        tail = b"data: " + json.dumps({"type": "error", "errorText": error["message"]}).encode() \
            + b"\n\ndata: [DONE]\n\n"
    elif media == "text/plain":
        tail = f"\n{ERROR_MARK} {error['message']}\n".encode()
    else:  # nothing else streams: end the body cleanly
        tail = b""
    await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _end_websocket(send: Any, item: InFlight) -> None:
    if item.cut == "expired":
        frame = f"{ERROR_MARK} {json.dumps(shutdown_error())}"
        for _ in range(min(item.pending, _MAX_WS_TAILS)):
            await send({"type": "websocket.send", "text": frame})
            await send({"type": "websocket.send", "text": END})
    await send({"type": "websocket.close", "code": _RESTART_CLOSE,
                "reason": "server restarting: reconnect"})
