"""Streamed responses that notice the client hanging up, even while nothing is sent.

``ClosingEventStream``: use it for every Server-Sent Events answer of our own making (the
faces' streams and the resumable runs' readers: a quiet run must still notice its reader
leaving). It closes its body generator however it ends, so the run, and its upstream
request, stop at once.

``before_hang_up``: for what a request awaits before it answers (a whole answer, a first
token): the client leaving cancels it, so the run and its upstream call stop there too.

``StreamEnd``: a response's stream in a task of its own (as Starlette and sse-starlette
run it), and how it ends early; shared with LangServe's SSE responses
(``langserve_compat.sse_response``). One plain asyncio task awaits the hang-up and
cancels the anyio cancel scope the stream runs in. An anyio task group of two
(Starlette's way) costs a short answer some 30-100 µs more
(``bench/bench_event_stream.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Coroutine, Mapping
from typing import Any, TypeVar

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["EVENT_STREAM", "ClientHungUp", "ClosingEventStream", "StreamEnd", "before_hang_up",
           "in_group"]

T = TypeVar("T")

EVENT_STREAM = "text/event-stream"
_NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class StreamEnd:
    """Runs ``stream`` (a response's sending) in a task of its own until it ends, or until
    the client hangs up (awaited in one plain task) or ``stop()`` is called, which cancel
    it. ``error``: what failed, if a failure stopped it. ``wait()`` in the request's task."""

    __slots__ = ("error", "hang_up", "scope", "stream")

    def __init__(self, stream: Coroutine[Any, Any, None], receive: Receive) -> None:
        loop = asyncio.get_running_loop()
        self.error: Exception | None = None
        # Stopped through an anyio cancel scope, not one Task.cancel(): the scope cancels
        # again at every wait until the stream has left it, so a cancellation that some
        # code on the way swallows (Python 3.11's asyncio.wait_for can, when what it waits
        # for completes at the same moment) cannot leave an abandoned stream running to
        # its end, as a resumable run's reader did under load.
        self.scope = anyio.CancelScope()
        self.stream = loop.create_task(self._run(stream))
        self.hang_up = loop.create_task(self._until_hang_up(receive))

    async def _run(self, stream: Coroutine[Any, Any, None]) -> None:
        with self.scope:
            await stream

    def stop(self, error: Exception | None = None) -> None:
        if not self.scope.cancel_called and not self.stream.done():
            self.error = error
            self.scope.cancel()

    async def wait(self) -> None:
        """Until the stream has ended. A stop is no error (the hang-up's, the exit
        signal's); what the stream or the hang-up wait raised is raised here, in an
        exception group (``in_group``). If the request itself is cancelled, so is the
        stream."""
        try:
            await self.stream  # a stop ends it without an error: the scope takes its own
        except asyncio.CancelledError:
            self.stream.cancel()  # the request's own cancellation
            raise
        except Exception as error:
            raise in_group(error) from None
        finally:
            self.hang_up.cancel()
        if self.error is not None:
            raise in_group(self.error)

    async def _until_hang_up(self, receive: Receive) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception as error:  # noqa: BLE001 - it ends the stream, raised there
            self.stop(error)
            return
        self.stop()


class ClientHungUp(Exception):
    """The client hung up before the request had its answer (``before_hang_up``)."""


async def before_hang_up(work: Awaitable[T], receive: Receive) -> T:
    """``work``'s result, or ``ClientHungUp`` if the client hangs up first, ``work`` then
    cancelled. What ``work`` raises is raised as it is. Call it once the request's body
    has been read: it waits on ``receive`` for the hang-up."""
    done: list[T] = []
    failed: list[Exception] = []

    async def run() -> None:
        try:
            done.append(await work)
        except Exception as error:  # noqa: BLE001 - raised below, as it is
            failed.append(error)

    await StreamEnd(run(), receive).wait()
    if failed:
        raise failed[0]
    if not done:
        raise ClientHungUp
    return done[0]


def in_group(error: Exception) -> BaseExceptionGroup[Exception]:
    """``error`` in an exception group, as an anyio task group raises it: Starlette's
    exception handlers, which cannot answer once the response has started, pass a group
    by, to the middlewares that end the body (``error_events``, the faces' own)."""
    return BaseExceptionGroup("unhandled errors in a TaskGroup", [error])


class ClosingEventStream(StreamingResponse):
    """``text/event-stream`` from ``body``; a hang-up cancels it and closes ``body``."""

    def __init__(self, body: AsyncIterator[bytes],
                 headers: Mapping[str, str] | None = None) -> None:
        self.events = body
        super().__init__(body, media_type=EVENT_STREAM,
                         headers={**_NO_BUFFERING, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await StreamEnd(self.stream_response(send), receive).wait()
        except* OSError:
            pass  # the client went away mid-write (ASGI servers' send raises OSError)
        finally:
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
