"""Bodies LangServe (or FastAPI under it) would turn into a 500, answered 422/413 first.

LangServe and FastAPI parse JSON with the standard library, which accepts NaN/Infinity
and lone surrogates and then fails to render its own 422 echoing them; a body that is
not UTF-8 escapes as a UnicodeDecodeError; ``"config": null`` and ``/batch`` inputs that
are not a list fail inside LangServe; ``/batch`` validates its inputs without catching
the error. ``JSONBodyGuard`` parses every JSON POST (any case of ``application/json``:
``media_types.is_json``) with ``input_limits.parse_json`` (orjson, which refuses all
three, and a nesting depth cap) and reads ``"config": null`` as no config;
``validation_error_json`` is the exception handler for ``/batch``'s uncaught
``ValidationError``. Body sizes are capped before it (``input_limits.BodyLimit``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ..error_responses import validation_details
from ..input_limits import DEFAULT_MAX_JSON_DEPTH, JSONTooDeep, parse_json
from ..media_types import is_json

__all__ = ["JSONBodyGuard", "validation_error_json"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

class JSONBodyGuard:
    """Answers 422/413 for JSON bodies LangServe would turn into a 500 (and reads
    ``"config": null`` as no config, which LangServe fails on too).

    LangServe and FastAPI parse with the standard library, which accepts NaN/Infinity
    and lone surrogates and then fails to render its own 422 echoing them, and a body
    that is not UTF-8 escapes as a UnicodeDecodeError. orjson refuses all three, so a
    body it cannot parse gets a clear 422 here, before any route runs; so does one
    nested deeper than ``max_depth`` (``input_limits.parse_json``). The body's size is
    bounded before it gets here (``input_limits.BodyLimit``).
    """

    def __init__(self, app: Callable[..., Awaitable[None]], *,
                 max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> None:
        self.app, self.max_depth = app, max_depth

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" \
                or not is_json(dict(scope["headers"]).get(b"content-type")):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            parsed = parse_json(body, self.max_depth)
        except ValueError as exc:
            # FastAPI's own shape for a body that does not parse
            response = JSONResponse({"detail": [{
                "type": "json_too_deep", "loc": ["body"], "msg": f"{exc}: flatten it"}
                if isinstance(exc, JSONTooDeep) else {
                "type": "json_invalid", "loc": ["body"],
                "msg": f"The request body is not valid JSON (UTF-8, no NaN/Infinity, "
                       f"no lone surrogates): {exc}"}]}, 422)
            await response(scope, receive, send)
            return
        if scope["path"].endswith("/batch") and isinstance(parsed, dict) \
                and not isinstance(parsed.get("inputs", []), list):
            response = JSONResponse({"detail": [{  # LangServe calls len() on it: a 500
                "type": "list_type", "loc": ["body", "inputs"],
                "msg": "inputs must be a list of the chain's inputs"}]}, 422)
            await response(scope, receive, send)
            return
        if isinstance(parsed, dict) and "config" in parsed and parsed["config"] is None:
            del parsed["config"]  # "config": null means no config (LangServe: a 500)
            body = orjson.dumps(parsed)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def validation_error_json(request: Request, exc: Exception) -> JSONResponse:
    """LangServe's ``/batch`` validates its inputs without catching the error (a 500)."""
    assert isinstance(exc, ValidationError)
    return JSONResponse({"detail": validation_details(exc)}, status_code=422)
