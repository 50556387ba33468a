"""A request refused before any model runs, as an exception a route or dependency raises:
its stable ``type`` for programs and its message for people (``messages``), in the
request's language. ``refusal_json`` is the app's handler for it."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from .messages import DEFAULT_LANGUAGE, Language, say

__all__ = ["Refusal", "refusal_json"]


class Refusal(HTTPException):
    """``HTTPException(status, <the message code in lang>)`` that remembers its code."""

    def __init__(self, status: int, code: str, lang: Language = DEFAULT_LANGUAGE, *,
                 headers: dict[str, str] | None = None, **values: object) -> None:
        super().__init__(status, say(code, lang, **values), headers=headers)
        self.code = code


async def refusal_json(request: Request, exc: Exception) -> JSONResponse:
    """The exception handler for ``Refusal``: ``{"detail", "type"}``."""
    assert isinstance(exc, Refusal)
    return JSONResponse({"detail": exc.detail, "type": exc.code}, status_code=exc.status_code,
                        headers=exc.headers)
