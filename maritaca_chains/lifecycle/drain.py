"""The drain's state: what is in flight in this process, and how it ends.

A ``Drain`` is shared by the app (which registers every HTTP request, WebSocket session
and background run in flight) and the server (``uvicorn_drain``, which starts it at
SIGTERM and waits on it). Its life, all on the event loop except ``request``:

1. ``request()`` (from the signal handler): ``draining`` is true, ``/readyz`` says 503.
2. ``begin()``: WebSocket sessions with no run in flight are closed (1012, service
   restart); everything else keeps going.
3. ``wait_until_idle(seconds)``: returns as soon as nothing is in flight.
4. ``expire()`` if the time ran out: background runs are stopped (their readers get a
   ``server_shutting_down`` error event), then every stream left is cut with that
   named error in its own protocol (``middleware``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio

__all__ = ["DRAIN_STATE", "SHUTTING_DOWN", "Drain", "InFlight"]

logger = logging.getLogger("maritaca_chains.lifecycle")

# the key under which the app's lifespan state hands its Drain to the server
DRAIN_STATE = "maritaca_chains.drain"
# the error type of whatever the drain had to cut (clients retry it elsewhere)
SHUTTING_DOWN = "server_shutting_down"

_POLL = 0.05
# after background runs stop, their readers get this long to relay the run's last event
_RELAY_SECONDS = 1.5
# after the cut, streams get this long to write their error and end
_CUT_SECONDS = 3.0


class InFlight:
    """One HTTP request or WebSocket session in flight; ``pending`` counts a WebSocket's
    inputs not yet answered (each answer ends with ``[END]``). A ``heartbeat`` is a
    stream that only says a page is open (the Gradio UI's): nothing to wait for."""

    __slots__ = ("kind", "cancel_scope", "pending", "cut")

    def __init__(self, kind: Literal["http", "websocket", "heartbeat"]) -> None:
        self.kind = kind
        self.cancel_scope = anyio.CancelScope()
        self.pending = 0
        self.cut: Literal["idle", "expired"] | None = None

    def stop(self, why: Literal["idle", "expired"]) -> None:
        """Cancel it (once); the middleware then ends it in its protocol."""
        if self.cut is None:
            self.cut = why
            self.cancel_scope.cancel()


class Drain:
    """This process's work in flight, and the drain that lets it finish.

    ``seconds`` (``MARITACA_CHAINS_DRAIN_SECONDS``) caps the wait; with 0 nothing waits:
    what is in flight is cut with the named error at once."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds
        self.draining = False
        self.expired = False
        self.started_at: float | None = None
        self._in_flight: set[InFlight] = set()
        self._background: list[tuple[Callable[[], int], Callable[[], Awaitable[None]]]] = []

    # ------------------------------------------------------------------ registry

    def add(self, item: InFlight) -> None:
        self._in_flight.add(item)

    def discard(self, item: InFlight) -> None:
        self._in_flight.discard(item)

    def add_background(self, count: Callable[[], int],
                       stop: Callable[[], Awaitable[None]]) -> None:
        """Work with no connection of its own (resumable runs): ``count()`` of it in
        flight; ``stop()`` ends it with a ``server_shutting_down`` error for its readers."""
        self._background.append((count, stop))

    def in_flight(self) -> int:
        """Requests, sessions and background work still going."""
        return len(self._in_flight) + sum(count() for count, _ in self._background)

    # ------------------------------------------------------------------ the drain

    def request(self) -> None:
        """Stop being ready now (safe from a signal handler: one attribute)."""
        self.draining = True

    def begin(self) -> None:
        """Start the drain: idle WebSocket sessions close; the rest runs on."""
        self.draining = True
        self.started_at = time.monotonic()
        logger.warning("draining: %d in flight, up to %g s (MARITACA_CHAINS_DRAIN_SECONDS)",
                       self.in_flight(), self.seconds)
        self.close_idle_sessions()

    def close_idle_sessions(self) -> None:
        for item in list(self._in_flight):
            if item.kind == "heartbeat" or (item.kind == "websocket" and item.pending == 0):
                item.stop("idle")

    async def wait_until_idle(self, within: float, *,
                              give_up: Callable[[], bool] = lambda: False) -> bool:
        """True once nothing is in flight; False after ``within`` s or when ``give_up()``."""
        deadline = time.monotonic() + within
        while self.in_flight():
            if give_up() or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_POLL)
        return True

    async def expire(self) -> None:
        """The time is up: stop background runs, then cut every stream left with the
        named error (each in its face's protocol)."""
        self.expired = True
        logger.warning("drain time is up: cutting %d in flight with %s",
                       self.in_flight(), SHUTTING_DOWN)
        stopped = False
        for count, stop in self._background:
            if count():
                stopped = True
                try:
                    await stop()
                except Exception as exc:  # still cut the rest
                    logger.error("could not stop background work: %s: %s",
                                 type(exc).__name__, exc)
        if stopped:  # readers of those runs relay the run's own last event, then end
            await self.wait_until_idle(_RELAY_SECONDS)
        for item in list(self._in_flight):
            item.stop("expired")
        await self.wait_until_idle(_CUT_SECONDS)
