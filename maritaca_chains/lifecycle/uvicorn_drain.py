"""uvicorn, made to drain at SIGTERM: what ``maritaca-chains serve`` runs.

Two things stop a plain uvicorn from letting streams finish, and ``DrainingServer``
works around both:

- sse-starlette 1.x replaces ``uvicorn.Server.handle_exit`` (its ``AppStatus``) so the
  exit signal ends every SSE stream at once: LangServe's ``/stream`` and
  ``/stream_events`` are cut mid-answer. ``DrainingServer.handle_exit`` is its own, so
  that patch never runs; the drain ends those streams itself, with a named error, only
  when its time is up.
- uvicorn's own shutdown closes every WebSocket at once (1012) and cancels whatever is
  still running after ``timeout_graceful_shutdown``, with no word to the client.

At the first SIGTERM or SIGINT the app's ``Drain`` (handed over in the lifespan state)
stops being ready; then the listening sockets close (new connections go to other
replicas), and the server waits until nothing is in
flight or ``MARITACA_CHAINS_DRAIN_SECONDS`` have passed (then ``Drain.expire``), and stops
as uvicorn does. A second signal stops at once.

It uses uvicorn internals (``servers``, ``_captured_signals``, ``lifespan.state``);
tests/test_lifecycle.py fails if they change.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType
from typing import Any

import uvicorn

from .drain import DRAIN_STATE, Drain

__all__ = ["SHUTDOWN_GRACE_SECONDS", "DrainingServer", "serve"]

logger = logging.getLogger("maritaca_chains.lifecycle")

# after the drain, uvicorn's own shutdown waits this long for connections left over
SHUTDOWN_GRACE_SECONDS = 5


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` that drains the app's work in flight before stopping."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._draining: asyncio.Task[None] | None = None

    def drain(self) -> Drain | None:
        """The app's drain (its lifespan state), once the app has started."""
        lifespan = getattr(self, "lifespan", None)
        drain = (getattr(lifespan, "state", None) or {}).get(DRAIN_STATE)
        return drain if isinstance(drain, Drain) else None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # not super().handle_exit: sse-starlette's patch of it ends every SSE stream now
        self._captured_signals.append(sig)  # uvicorn re-raises them once stopped
        drain = self.drain()
        if self.should_exit or (drain is not None and drain.draining):
            self.force_exit = self.should_exit = True  # a second signal: stop now
        elif drain is None or not self.started:
            self.should_exit = True
        else:
            drain.request()  # /readyz says 503 from now on; on_tick starts the drain

    async def on_tick(self, counter: int) -> bool:
        drain = self.drain()
        if drain is not None and drain.draining and self._draining is None \
                and not self.should_exit:
            self._draining = asyncio.create_task(self._drain_then_stop(drain))
        return await super().on_tick(counter)

    async def _drain_then_stop(self, drain: Drain) -> None:
        try:
            # New connections are refused (a proxy sends them to other replicas). Open
            # keep-alive connections stay: a request a proxy sends on one is served, its
            # response says Connection: close (middleware); closing them now would race
            # with a request on its way (a POST the proxy may not retry).
            for server in self.servers:
                server.close()
            drain.begin()
            if not await drain.wait_until_idle(drain.seconds,
                                               give_up=lambda: self.force_exit):
                if not self.force_exit:
                    await drain.expire()
            logger.warning("drained: stopping")
        except Exception:
            logger.exception("the drain failed: stopping now")
        finally:
            self.should_exit = True


def serve(app: Any, *, host: str, port: int, log_level: str, **config: Any) -> None:
    """Run ``app`` (an ASGI app, or an import string with ``factory=True``) on one
    ``DrainingServer`` until it is stopped."""
    server = DrainingServer(uvicorn.Config(
        app, host=host, port=port, log_level=log_level,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS, **config))
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE
