"""LangServe, and the places where this server works around it: one module per workaround,
each named for what it works around, each pinned by a test that fails if LangServe's
behaviour changes under it (``tests/test_langserve_compat.py``).

LangServe's repository was archived in May 2026; 0.3.3 is its last release and is pinned
in ``pyproject.toml``. The wire it speaks (``/invoke``, ``/batch``, ``/stream``,
``/stream_log``, ``/stream_events``, the playground, ``RemoteRunnable``) stays exactly
LangServe's. What this package relies on:

- ``error_events``: the exact bytes of LangServe's generic SSE error event
  (``{"status_code": 500, "message": "Internal Server Error"}``), replaced by the named
  cause; and that LangServe re-raises the run's exception after sending it.
- ``body_guard``: which bodies LangServe/FastAPI turn into a 500 (not UTF-8, NaN, lone
  surrogates, ``"config": null``, ``/batch`` inputs that are not a list, ``/batch``'s
  uncaught ``ValidationError``).
- ``config_hash``: ``langserve.api_handler._config_from_hash`` and the ``config_hash``
  path parameter of the ``/<chain>/c/<hash>/...`` routes.
- ``config_hook``: ``add_routes``' ``per_req_config_modifier`` is called once per request,
  with the request, before any run starts; what it returns is every run's config.
- ``batch_callbacks``: ``/batch`` keeps only the ``config_keys`` of each run's config
  (the hook's callbacks are dropped).
- ``feedback_routes``: ``/token_feedback`` answers 400 without a ``token_feedback_config``
  (left out); ``/feedback`` works only with LangSmith tracing on (added only then).
- ``playground_page``: the playground page's exact ``<html lang="en">`` and
  ``<title>Playground</title>`` (made pt-BR and named after the chain).
- ``sse_encoding``: sse-starlette's ``EventSourceResponse.stream_response`` (which LangServe's
  streams go through) and its ``_send_lock``; replaced by one that sends the same bytes
  (and ends at the next event after a hang-up), only when a probe at start shows it does.
- ``sse_response``: ``EventSourceResponse``'s attributes (``stream_response``, ``active``,
  ``ping_interval``, ``ping_message_factory``, ``_send_lock``, ``background``) and the exit
  signal of sse-starlette's ``AppStatus``; its ``__call__`` runs the same response
  without the task group, for our ``/stream`` and ``/stream_events``.
- ``stream_route``: what LangServe's ``/stream`` and ``/stream_events`` handlers do for a
  request with no config (the config they build, how they unpack the input, the events
  they send), done without them; ``add_routes`` adds those ``POST`` routes with the
  chain's dependencies, whose places these routes take.
- ``whole_answer_hang_up``: ``/invoke`` and ``/batch`` do not watch for the client
  hanging up while the run goes on (their runs are cancelled when it does).
- ``served_chain``: ``/stream`` adds ``langserve.callbacks.AsyncEventAggregatorCallback``
  to the run's callbacks and never reads it; ``/batch`` calls the chain's ``abatch``,
  which leaves the other inputs running when one fails.

Only ``app.create_app`` uses this package (``install`` and ``add_chain_routes``); no other
module imports from it. The request rules it applies are ``request_rules``'.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from langchain_core.runnables import Runnable
from langserve import add_routes
from pydantic import ValidationError

from ..request_rules import takes_threads
from .batch_callbacks import BatchRunsScope
from .body_guard import JSONBodyGuard, validation_error_json
from .config_hook import config_hook
from .error_events import UpstreamErrorMiddleware
from .feedback_routes import feedback_routes
from .playground_page import PlaygroundInPortuguese
from .served_chain import served_chain
from .sse_encoding import install as install_sse_encoding
from .stream_route import Guard, add_stream_route
from .whole_answer_hang_up import StopRunOnHangUp

__all__ = ["add_chain_routes", "install"]


def install(app: FastAPI, *, max_json_depth: int, titles: dict[str, str]) -> None:
    """The middlewares and the handler LangServe's routes need (call before the other
    ``add_middleware`` calls: these go innermost); ``titles``: chain name -> its title,
    for the playground's page."""
    app.add_middleware(StopRunOnHangUp, names=titles)
    app.add_middleware(BatchRunsScope)
    app.add_middleware(UpstreamErrorMiddleware)
    app.add_middleware(PlaygroundInPortuguese, titles=titles)
    app.add_middleware(JSONBodyGuard, max_depth=max_json_depth)
    app.add_exception_handler(ValidationError, validation_error_json)
    install_sse_encoding()  # the same bytes per event, encoded in one step


def add_chain_routes(app: FastAPI, name: str, chain: Runnable[Any, Any],
                     guard: Guard) -> None:
    """LangServe's routes for ``chain`` at ``/<name>``, each behind ``guard(request)`` (a
    dependency of theirs); the common ``/stream`` and ``/stream_events`` requests
    answered by ``stream_route``, which calls it itself."""
    hook = config_hook(threads=takes_threads(chain))
    served = served_chain(chain)
    add_routes(app, served, path=f"/{name}", dependencies=[Depends(guard)],
               per_req_config_modifier=hook, config_keys=("configurable",),
               **feedback_routes())
    add_stream_route(app, name, chain, served, guard, hook)
