"""LangServe's ``/batch`` keeps only the ``config_keys`` (``configurable``) of each run's
config, so the callbacks the per-request hook adds (the ledger: log line, metrics, token
charge) never reach its runs. ``follow_batch_runs`` hands them over another way: a
context variable langchain-core adds to every run configured in the request's context
(``register_configure_hook``), which the batch's runs are. ``BatchRunsScope`` (an ASGI
middleware) ends it with the request, so nothing else that runs in the same context
later (an in-process client's next request) gets it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.tracers.context import register_configure_hook
from starlette.requests import Request

__all__ = ["BatchRunsScope", "follow_batch_runs"]

_BATCH_HANDLER: ContextVar[BaseCallbackHandler | None] = ContextVar(
    "maritaca_chains_batch_handler", default=None)
register_configure_hook(_BATCH_HANDLER, inheritable=True)


def follow_batch_runs(request: Request, handler: BaseCallbackHandler) -> bool:
    """On ``/batch``: every run this request starts gets ``handler`` (no-op elsewhere);
    whether it is a batch. Called from LangServe's per-request hook, which runs in the
    request's own task."""
    if not request.scope["path"].endswith("/batch"):  # not request.url: a parse per request
        return False
    _BATCH_HANDLER.set(handler)
    return True


class BatchRunsScope:
    """Around each ``/batch`` request: the handler ``follow_batch_runs`` set is unset
    when the request ends (pure ASGI; other paths pass untouched)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/batch"):
            await self.app(scope, receive, send)
            return
        token = _BATCH_HANDLER.set(None)
        try:
            await self.app(scope, receive, send)
        finally:
            _BATCH_HANDLER.reset(token)
