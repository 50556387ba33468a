"""LangServe hides every mid-stream exception behind one generic SSE ``error`` event
(``{"status_code": 500, "message": "Internal Server Error"}``, these exact bytes) and then
re-raises it: uvicorn logs a traceback and cuts the body short. ``UpstreamErrorMiddleware``
puts the cause in the event instead (``error_responses``: a rate limit, a rejected key,
an unreachable API...), ends the body cleanly, and closes every upstream stream a request
opened when it ends (hang-ups included). ``run_error_recorder`` keeps the run's
exception for it (the run's ledger calls it: ``config_hook``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from uuid import UUID

from starlette.requests import HTTPConnection

from maritaca import closing_upstreams

from ..error_responses import sse_error_data
from ..messages import scope_language

__all__ = ["GENERIC_ERROR", "UpstreamErrorMiddleware", "run_error_recorder"]

logger = logging.getLogger("maritaca_chains.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

# LangServe's one error event for every mid-stream failure, as it serialises it
GENERIC_ERROR = json.dumps({"status_code": 500, "message": "Internal Server Error"}).encode()
_ERROR_BOX = "error_box"


def _only(exc: BaseException, error: BaseException) -> bool:
    """Whether ``exc`` is ``error``, alone or in (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(inner, error) for inner in exc.exceptions)
    return exc is error


class _ErrorBox:
    """Per-request holder for the exception that ended a run."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def record(self, run_id: UUID, error: BaseException) -> None:
        """A root run failed: keep its exception (the first) and log it with the run id."""
        if self.error is not None:
            return
        if isinstance(error, asyncio.CancelledError):  # the client went away: not a failure
            logger.info("run %s cancelled: the client disconnected", run_id)
            return
        self.error = error
        logger.error("run %s failed: %s: %s", run_id, type(error).__name__, error)


class UpstreamErrorMiddleware:
    """Names upstream failures in streams, and closes what a request left open.

    - LangServe hides every mid-stream exception behind one generic SSE error event, then
      re-raises it (uvicorn logs a traceback and cuts the body short). The run's exception
      (kept by ``run_error_recorder``) says whether it was a rate limit, a rejected key or
      an unreachable API: the event says that instead, and the body ends properly.
    - When a request ends (a client hanging up included), every upstream stream it
      opened is closed, even if a framework still holds the abandoned generators.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            with closing_upstreams():
                await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        box = _ErrorBox()
        scope.setdefault("state", {})[_ERROR_BOX] = box
        started = ended = False

        async def send_with_cause(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body":
                ended = not message.get("more_body", False)
                if box.error is not None and GENERIC_ERROR in message.get("body", b""):
                    cause = sse_error_data(box.error, scope_language(scope))
                    message["body"] = message["body"].replace(GENERIC_ERROR, cause)
            await send(message)

        with closing_upstreams():
            try:
                await self.app(scope, receive, send_with_cause)
            except Exception as exc:
                if not (started and box.error is not None and _only(exc, box.error)):
                    raise
                # already told to the client as an error event, and logged with its run id
                if not ended:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})


def run_error_recorder(connection: HTTPConnection
                       ) -> Callable[[UUID, BaseException], None] | None:
    """What hands the request's failed root run to the middleware: the ledger's
    ``on_root_error`` (none outside an HTTP request the middleware wraps)."""
    box = connection.scope.get("state", {}).get(_ERROR_BOX)
    return box.record if box is not None else None
