"""A replica's life: health probes, and a graceful drain between SIGTERM and exit.

``add_lifecycle(app, settings, served, runs)`` (in ``create_app``) answers ``/livez``
and ``/readyz`` and registers all work in flight with a ``Drain``; the app's lifespan
yields ``lifespan_state(app)`` so the server finds it. ``maritaca-chains serve`` runs
``uvicorn_drain.serve``: at SIGTERM the replica stops being ready, takes no new
connections, lets every stream finish for up to ``MARITACA_CHAINS_DRAIN_SECONDS`` (30),
then ends what is left with a ``server_shutting_down`` error event and exits. A second
signal exits at once. Modules: ``drain`` (the state), ``middleware`` (ASGI side, the
error in each face's protocol), ``probes``, ``uvicorn_drain`` (the server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from ..backend import ServedModel
from ..runs import RunManager
from ..settings import ServerSettings
from .drain import DRAIN_STATE, SHUTTING_DOWN, Drain
from .middleware import SHUTDOWN_MESSAGE, LifecycleMiddleware, shutdown_error
from .probes import LIVE_PATH, READY_PATH, Readiness

__all__ = ["DRAIN_STATE", "LIVE_PATH", "READY_PATH", "SHUTDOWN_MESSAGE", "SHUTTING_DOWN",
           "Drain", "LifecycleMiddleware", "Readiness", "add_lifecycle", "lifespan_state",
           "shutdown_error"]


def add_lifecycle(app: FastAPI, settings: ServerSettings, served: ServedModel,
                  runs: RunManager | None = None) -> Drain:
    """Probes and drain bookkeeping for ``app`` (call after every other
    ``add_middleware``: this one goes outermost). ``runs``: resumable runs to wait for."""
    drain = Drain(settings.drain_seconds)
    readiness = Readiness(drain, served, settings)
    if runs is not None:
        drain.add_background(lambda: runs.running, runs.stop_runs)
    app.add_middleware(LifecycleMiddleware, drain=drain, readiness=readiness)
    app.state.drain, app.state.readiness = drain, readiness
    return drain


@asynccontextmanager
async def lifespan_state(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    """What the app's lifespan yields: its ``Drain``, where ``DrainingServer`` looks."""
    try:
        yield {DRAIN_STATE: app.state.drain}
    finally:
        await app.state.readiness.aclose()
