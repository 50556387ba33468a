"""An exception as a client sees it: the one mapping, and a renderer per face.

Every face tells a failed run the same way. ``describe_error`` decides the status, the
named cause (``type``) and the message (never a key, never a traceback); the renderers
shape that for JSON responses, LangServe's SSE ``error`` event, the plain-text face's
last line and the WebSocket's ``[ERROR]`` frame. The ``type`` is a stable English code
for programs; the message is for people, in pt-BR unless the request asked for English
(``lang``, from ``messages.language``; the words are in ``messages``).

==============================  ======  ==========================
exception                       status  type
==============================  ======  ==========================
maritaca RateLimitError          429    rate_limit (+ retry_after)
AuthenticationError              502    upstream_authentication
PermissionDeniedError            502    upstream_permission
NotConfiguredError               503    not_configured (no key, no
                                        embedded model installed)
ContextTooLongError              400    context_too_long
BadRequestError                  400    bad_request
TimeoutError                     504    upstream_timeout
ConnectionError                  503    upstream_unavailable
ServerError                      502    upstream_error
StreamError                      502    upstream_stream_broken
quotas QuotaExceeded             429    quota_exceeded (+ retry_after)
Redis unreachable (redis_outage) 503    redis_unavailable
pydantic ValidationError         422    invalid_input (+ errors)
ValueError / TypeError           422    invalid_input
anything else                    500    internal
==============================  ======  ==========================
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from maritaca import errors
from maritaca.local import INSTALL_COMMAND

from .messages import DEFAULT_LANGUAGE, Language, say
from .quota_exceeded import QuotaExceeded
from .redis_outage import REDIS_DOWN, RETRY_AFTER_SECONDS
from .refusals import Refusal

__all__ = ["ERROR_MARK", "describe_error", "error_frame", "error_json", "error_line",
           "retry_after_header", "sse_error_data", "validation_details"]

ERROR_MARK = "[ERROR]"

_UPSTREAM: list[tuple[type[BaseException], int, str]] = [
    (errors.NotConfiguredError, 503, "not_configured"),
    (errors.RateLimitError, 429, "rate_limit"),
    (errors.AuthenticationError, 502, "upstream_authentication"),
    (errors.PermissionDeniedError, 502, "upstream_permission"),
    (errors.ContextTooLongError, 400, "context_too_long"),
    (errors.BadRequestError, 400, "bad_request"),
    (errors.TimeoutError, 504, "upstream_timeout"),
    (errors.ConnectionError, 503, "upstream_unavailable"),
    (errors.ServerError, 502, "upstream_error"),
    (errors.StreamError, 502, "upstream_stream_broken"),
]
_OURS: list[tuple[tuple[type[BaseException], ...], int, str]] = [
    (REDIS_DOWN, 503, "redis_unavailable"),
]


def validation_details(exc: ValidationError, *, prefix: tuple[str, ...] = ()
                       ) -> list[dict[str, Any]]:
    """FastAPI's 422 ``detail`` items for a pydantic error (no documentation URLs)."""
    return [{"type": e["type"], "loc": [*prefix, *e["loc"]], "msg": e["msg"]}
            for e in exc.errors(include_url=False, include_context=False)]


def describe_error(exc: BaseException, lang: Language = DEFAULT_LANGUAGE) -> dict[str, Any]:
    """``{"status_code", "type", "message"[, "retry_after"][, "errors"]}`` for ``exc``,
    the message in ``lang``."""
    for kind, status, name in _UPSTREAM:
        if isinstance(exc, kind):
            if name == "not_configured":
                message = say(name, lang, command=INSTALL_COMMAND)
            else:
                message = say("upstream", lang, type=name, detail=exc,
                              reason=say(f"upstream.{name}", lang))
            payload: dict[str, Any] = {"status_code": status, "type": name,
                                       "message": message}
            if isinstance(exc, errors.RateLimitError) and exc.retry_after is not None:
                payload["retry_after"] = exc.retry_after
            return payload
    if isinstance(exc, Refusal):  # e.g. a busy conversation thread, refused in a run
        return {"status_code": exc.status_code, "type": exc.code, "message": exc.detail}
    if isinstance(exc, QuotaExceeded):  # this server's limit for the caller's key
        return {"status_code": 429, "type": "quota_exceeded", "message": exc.message(lang),
                "retry_after": exc.retry_after}
    for kinds, status, name in _OURS:
        if isinstance(exc, kinds):
            return {"status_code": status, "type": name, "message": say(name, lang),
                    "retry_after": RETRY_AFTER_SECONDS}
    if isinstance(exc, ValidationError):
        details = validation_details(exc)
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}"
                          for e in details)
        return {"status_code": 422, "type": "invalid_input",
                "message": say("invalid_input", lang, where=where), "errors": details}
    if isinstance(exc, ValueError | TypeError):  # e.g. JSON that is not an object
        return {"status_code": 422, "type": "invalid_input", "message": str(exc)}
    return {"status_code": 500, "type": "internal", "message": say("internal", lang)}


def retry_after_header(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, rounded up. HTTP allows no fraction, and
    strict clients (urllib3's retries, for one) refuse one; a body or a ``retry-after-ms``
    header can carry the exact wait."""
    return str(max(math.ceil(seconds), 0))


def _retry_headers(error: dict[str, Any]) -> dict[str, str] | None:
    if "retry_after" in error:
        return {"Retry-After": retry_after_header(error["retry_after"])}
    return None


def error_json(exc: BaseException, lang: Language = DEFAULT_LANGUAGE) -> JSONResponse:
    """A JSON error response: ``{"detail", "type"[, "retry_after"]}`` with its status."""
    error = describe_error(exc, lang)
    if "errors" in error:  # FastAPI's own 422 shape, so clients parse one format
        return JSONResponse({"detail": error["errors"]}, status_code=422)
    body = {"detail": error["message"], "type": error["type"]}
    if "retry_after" in error:
        body["retry_after"] = error["retry_after"]
    return JSONResponse(body, status_code=error["status_code"], headers=_retry_headers(error))


def error_line(exc: BaseException, lang: Language = DEFAULT_LANGUAGE) -> str:
    """The plain-text face's last line after text already went out."""
    return f"\n{ERROR_MARK} {describe_error(exc, lang)['message']}\n"


def error_frame(exc: BaseException, lang: Language = DEFAULT_LANGUAGE) -> str:
    """The WebSocket face's ``[ERROR] {json}`` frame."""
    error = describe_error(exc, lang)
    return f"{ERROR_MARK} {json.dumps(error, ensure_ascii=False, default=str)}"


def sse_error_data(exc: BaseException, lang: Language = DEFAULT_LANGUAGE) -> bytes:
    """The JSON of LangServe's SSE ``error`` event, naming the cause."""
    return json.dumps(describe_error(exc, lang), ensure_ascii=False, default=str).encode()

