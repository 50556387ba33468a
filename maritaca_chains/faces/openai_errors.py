"""Every error under ``/v1`` in OpenAI's shape, the refusals made before any route runs
included (a wrong content type's 415, a body over its cap's 413, unparsable JSON's 422,
a refused ``Host``'s 400, a cross-site 403, a Redis outage's 503): the ``openai`` SDKs read
``error.message``, and would otherwise report FastAPI's ``{"detail": ...}`` as nothing.

``OpenAIErrorShape`` (pure ASGI, added outside the request guards by ``create_app``)
rewrites a JSON error answer on a ``/v1/`` path whose body is ``{"detail", "type"?}``
into ``{"error": {"message", "type", "param", "code"}}``: ``code`` is the named cause
(``body_too_large``, ``json_body_required``...), ``param`` the body field a FastAPI 422
names. Answers already in OpenAI's shape, successes and streams pass untouched; only
error bodies (small) are held until complete.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from .openai_wire import openai_error

__all__ = ["OPENAI_PREFIX", "OpenAIErrorShape", "openai_shaped"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

OPENAI_PREFIX = "/v1/"


def openai_shaped(status: int, body: bytes) -> bytes | None:
    """``body`` (FastAPI's error shape) in OpenAI's, or None to leave it as it is."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or "detail" not in value or "error" in value:
        return None
    detail, param = value["detail"], None
    code: str | None
    if isinstance(detail, list):  # FastAPI's validation errors: [{"loc", "msg", ...}]
        first = detail[0] if detail and isinstance(detail[0], dict) else {}
        loc = [str(p) for p in first.get("loc", []) if p != "body"]
        param = ".".join(loc) or None
        message = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e)
                            for e in detail) or "Invalid request"
        code = str(first.get("type") or "invalid_request")
    else:
        message = str(detail)
        code = str(value.get("type") or "") or None
    return orjson.dumps(openai_error(status, message, code, param))


class OpenAIErrorShape:
    """Pure ASGI: error answers under ``/v1/`` in OpenAI's shape (see the module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(OPENAI_PREFIX):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                if message["status"] >= 400 and _is_json(message):
                    held = message
                    return
            elif held is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = b"".join(chunks)
                shaped = openai_shaped(held["status"], body)
                if shaped is not None:
                    body = shaped
                headers = [(k, v) for k, v in held.get("headers", [])
                           if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**held, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, reshaping_send)


def _is_json(message: Message) -> bool:
    for name, value in message.get("headers", []):
        if name.lower() == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return False
