"""One in-flight ``/chat/completions`` response, cancelled the moment its client hangs up.

Use :func:`run_watched` for any response that takes time (streams, delayed answers): it
runs the response as a task beside a watcher that awaits ``receive()``. uvicorn answers
``http.disconnect`` as soon as the client's TCP connection closes; the watcher then
records the disconnect and cancels the task, so ``chunks_sent`` stops at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from starlette.types import Receive, Send

from ._records import RecordedRequest

__all__ = ["Call", "close_connection", "run_watched"]


class Call:
    """One in-flight request that may be interrupted by the client or by the server."""

    __slots__ = ("rec", "receive", "send", "task", "completed", "server_closed",
                 "disconnected")

    def __init__(self, rec: RecordedRequest, receive: Receive, send: Send) -> None:
        self.rec = rec
        self.receive = receive
        self.send = send
        self.task: asyncio.Future[None] | None = None
        self.completed = False  # the last body message is being sent
        self.server_closed = False  # we closed the connection (drop, shutdown)
        self.disconnected = False

    def transport(self) -> asyncio.Transport | None:
        # uvicorn's ``send`` is a bound method of its request cycle, which holds the transport.
        return getattr(getattr(self.send, "__self__", None), "transport", None)

    def abort(self) -> None:
        """Close the connection now, mid-response (server shutdown)."""
        self.server_closed = True
        transport = self.transport()
        if transport is not None:
            transport.abort()
        elif self.task is not None:
            self.task.cancel()


async def run_watched(call: Call, run: Awaitable[None], active: set[Call]) -> None:
    """Run ``run`` as a task, cancelled the moment the client disconnects; ``call`` is
    in ``active`` meanwhile, so a shutdown can abort it."""
    call.task = task = asyncio.ensure_future(run)
    watcher = asyncio.ensure_future(_watch(call))
    active.add(call)
    try:
        await task
    except asyncio.CancelledError:
        if not call.disconnected:
            raise
    finally:
        active.discard(call)
        watcher.cancel()


async def _watch(call: Call) -> None:
    while (await call.receive())["type"] != "http.disconnect":
        pass
    if call.completed:
        return
    call.disconnected = True
    if not call.server_closed:
        call.rec.client_disconnected = True
        call.rec.disconnected_at = time.monotonic()
    if call.task is not None:
        call.task.cancel()


async def close_connection(call: Call) -> None:
    """Close the connection without finishing the response (the ``drop`` scenario)."""
    call.server_closed = True
    transport = call.transport()
    if transport is None:  # not uvicorn: let the server close it
        raise ConnectionAbortedError("emulator drop scenario")
    transport.close()
    await asyncio.sleep(3600)  # the watcher cancels us once uvicorn sees the close
