"""Streamed responses that notice the client hanging up, even while nothing is sent.

``ClosingEventStream``: use it for every Server-Sent Events answer of our own making (the
faces' streams and the resumable runs' readers: a quiet run must still notice its reader
leaving). It closes its body generator however it ends, so the run, and its upstream
request, stop at once.

``StreamEnd``: how such a response ends early, shared with LangServe's SSE responses
(``langserve_compat.sse_response``). The response streams in its own task inside a
cancel scope; one plain asyncio task awaits the hang-up and cancels that scope. An anyio
task group of two (Starlette's way) costs a short answer some 30-100 µs more
(``bench/bench_event_stream.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["EVENT_STREAM", "ClosingEventStream", "StreamEnd", "in_group"]

EVENT_STREAM = "text/event-stream"
_NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class StreamEnd:
    """Ends one response's stream early by cancelling ``scope`` (the one it streams in):
    at the client's hang-up, awaited here in one plain task, or at ``stop()``. ``error``:
    what failed, if a failure ended it (the response raises it once the scope is left).
    ``close()`` once the response is done."""

    __slots__ = ("error", "scope", "task")

    def __init__(self, receive: Receive, scope: anyio.CancelScope) -> None:
        self.scope = scope
        self.error: Exception | None = None
        self.task = asyncio.get_running_loop().create_task(self._until_hang_up(receive))

    def stop(self, error: Exception | None = None) -> None:
        if not self.scope.cancel_called:
            self.error = error
            self.scope.cancel()

    def close(self) -> None:
        self.task.cancel()

    async def _until_hang_up(self, receive: Receive) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception as error:  # noqa: BLE001 - it ends the stream, raised there
            self.stop(error)
            return
        self.stop()


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
            with anyio.CancelScope() as streaming:
                end = StreamEnd(receive, streaming)
                try:
                    await self.stream_response(send)
                except Exception as error:
                    raise in_group(error) from None
                finally:
                    end.close()
            if end.error is not None:
                raise in_group(end.error)
        except OSError:
            pass  # the client went away mid-write
        finally:
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
