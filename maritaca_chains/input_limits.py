"""How big and how deep a client's input may be, checked before it is read or parsed.

- ``BodyLimit`` (pure ASGI, on every HTTP route): a body whose ``Content-Length`` is
  over the cap gets 413 before a byte of it is read; a body without one (chunked) gets
  413 as soon as the bytes received pass the cap, never buffered first. The cap is
  ``MARITACA_CHAINS_MAX_BODY_BYTES`` (8 MiB: summarize's largest input fits), and
  ``LOGIN_MAX_BYTES`` for the login form.
- ``parse_json(data, max_depth)``: the one JSON parser for client input (HTTP bodies,
  WebSocket frames): orjson (no NaN, no lone surrogates, UTF-8 only), and no nesting
  deeper than ``MARITACA_CHAINS_MAX_JSON_DEPTH`` (32), so a body or frame of 10,000
  nested brackets is a clear error, never a ``RecursionError`` further in.

Request heads and idle connections are bounded in ``connection_limits`` (uvicorn's
side); WebSocket frame sizes by uvicorn's ``ws_max_size`` (set by ``serve``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import HTTPException

from .messages import DEFAULT_LANGUAGE, Language, say, scope_language
from .metrics import request_refused
from .settings import ServerSettings

__all__ = ["DEFAULT_MAX_JSON_DEPTH", "LOGIN_MAX_BYTES", "BodyLimit", "BodyTooLarge",
           "InputLimits", "JSONTooDeep", "limits_of", "parse_json"]

logger = logging.getLogger("maritaca_chains.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

DEFAULT_MAX_JSON_DEPTH = 32
LOGIN_MAX_BYTES = 4096  # the login form: one key field
_LOGIN_PATH = "/login"


@dataclass(frozen=True)
class InputLimits:
    """The limits the app and its faces apply (from the settings)."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    ws_max_queued: int = 2

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> InputLimits:
        return cls(settings.max_body_bytes, settings.max_json_depth, settings.ws_max_queued)


def limits_of(app: Any) -> InputLimits:
    """The limits ``create_app`` left on ``app.state`` (the defaults elsewhere)."""
    limits = getattr(getattr(app, "state", None), "input_limits", None)
    return limits if isinstance(limits, InputLimits) else InputLimits()


class JSONTooDeep(ValueError):
    """JSON nested deeper than allowed."""


def parse_json(data: bytes | str, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """``data`` decoded, or ValueError saying what is wrong: ``orjson.JSONDecodeError``
    for text that is not strict JSON, ``JSONTooDeep`` past ``max_depth`` levels."""
    value = orjson.loads(data)  # refuses depth > 1024 by itself, without recursion
    if not isinstance(value, dict | list):
        return value
    if isinstance(data, str):
        brackets = data.count("[") + data.count("{")
    else:
        brackets = data.count(b"[") + data.count(b"{")
    if brackets > max_depth:  # only then can it be too deep (strings may hold brackets)
        try:
            _check_depth(value, max_depth)
        except JSONTooDeep:
            request_refused("json_too_deep")
            raise
    return value


def _check_depth(value: Any, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > max_depth:
                    raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels "
                                      f"(MARITACA_CHAINS_MAX_JSON_DEPTH)")
                stack.append((child, depth + 1))


class BodyTooLarge(HTTPException):
    """A request body over its cap (413). An HTTPException, so FastAPI's body reading
    passes it on as it is rather than as a 400."""

    def __init__(self, cap: int, lang: Language = DEFAULT_LANGUAGE) -> None:
        # the rest of the body is not read: the connection closes after the answer
        super().__init__(413, _too_large_message(cap, lang), headers={"Connection": "close"})


def _too_large_message(cap: int, lang: Language = DEFAULT_LANGUAGE) -> str:
    size = f"{cap // 2**20} MiB" if cap % 2**20 == 0 else f"{cap} bytes"
    return say("body_too_large", lang, size=size, login=LOGIN_MAX_BYTES)


class BodyLimit:
    """Pure ASGI: 413 for a request body over its cap, by ``Content-Length`` before
    reading, or, for a chunked body, as the bytes stream past it."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    def cap_for(self, path: str) -> int:
        return LOGIN_MAX_BYTES if path == _LOGIN_PATH else self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await _refuse(send, cap, scope_language(scope))
            return
        if declared is not None and not _chunked(scope):
            # the server reads a declared body to its length and no further (what
            # follows is the next request): it fits, and nothing is left to count or
            # to watch, so every message of a long answer skips this layer
            await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge(cap, scope_language(scope))
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracked_send)
        except (BodyTooLarge, BaseExceptionGroup) as exc:
            if isinstance(exc, BaseExceptionGroup):
                matched, rest = exc.split(BodyTooLarge)
                if matched is None:
                    raise
                if rest is not None:
                    raise rest from exc
            if not started:
                await _refuse(send, cap, scope_language(scope))


def _chunked(scope: Scope) -> bool:
    """Whether the request says ``Transfer-Encoding`` (which overrides a length)."""
    return any(name.lower() == b"transfer-encoding" for name, _ in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # uvicorn refuses a malformed one before the app
    return None


async def _refuse(send: Any, cap: int, lang: Language) -> None:
    request_refused("body_too_large")
    body = json.dumps({"detail": _too_large_message(cap, lang), "type": "body_too_large"},
                      ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
