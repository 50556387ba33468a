"""One streaming HTTP response read in its own task, for ChatMaritaca's ``_astream``.

Why a task: langchain-core runs a model's ``_astream`` inside helper tasks, and when a
LangServe client disconnects, sse-starlette's anyio task group re-cancels the run at
every await. If those cancellations land inside httpcore's read, they also interrupt
httpcore's close: the upstream connection stays open and Maritaca keeps generating
(and billing) tokens nobody reads. Here the response lives in a task that only
``close()`` cancels, exactly once, so httpcore's own shielded close runs to the end and
the upstream sees the connection close at once. The reader's own close, once the body
is read, runs in a task of its own: that one cancellation, landing in it (the consumer
saw ``[DONE]`` and closed while the reader was handing the connection back), would
otherwise leave the connection marked busy in the pool, its socket open for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar

import httpx

__all__ = ["UpstreamStream", "closing_upstreams", "open_upstreams"]

_END = object()
# Every reader still running (also those finishing their close after the consumer
# left: kept here so they are not garbage-collected mid-close).
_reading: set[asyncio.Task[None]] = set()
# The streams opened inside the current ``closing_upstreams()`` block (tasks started
# inside it share the set: a task copies its parent's context).
_scope: ContextVar[set[UpstreamStream] | None] = ContextVar("maritaca_upstreams", default=None)


def open_upstreams() -> int:
    """How many upstream responses are open in this process (a server's health figure:
    it returns to zero when no stream runs)."""
    return len(_reading)


@contextmanager
def closing_upstreams() -> Iterator[None]:
    """Close, on leaving the block, every upstream stream opened inside it.

    For servers, around each request: when a client hangs up, frameworks (LangServe's
    event aggregator, a kept task) may hold the abandoned chain's generators alive
    through the cancellation's traceback, so the model's own ``finally`` never runs;
    this closes the upstream when the request ends, whatever holds on to what.
    """
    streams: set[UpstreamStream] = set()
    token = _scope.set(streams)
    try:
        yield
    finally:
        with suppress(ValueError):  # left from another context: a generator finalised
            _scope.reset(token)     # by the garbage collector still closes its streams
        for stream in list(streams):
            stream.close()


async def _read(queue: asyncio.Queue[object], client: httpx.AsyncClient,
                request: httpx.Request,
                error_for: Callable[[httpx.Response, bytes], Exception]) -> None:
    """The reader task's body. A free function, not a method: a cancelled reader's
    traceback then holds the queue, never the stream that holds the task (no cycle left
    for the collector, and the blocks are freed at once)."""
    put = queue.put
    try:
        response = await client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                raise error_for(response, await response.aread())
            async for block in response.aiter_bytes():
                await put(block)
        finally:
            closing = asyncio.get_running_loop().create_task(response.aclose())
            _reading.add(closing)
            closing.add_done_callback(_closed)
            await asyncio.shield(closing)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # handed to the consumer, which raises it
        await put(exc)
        return
    await put(_END)


def _closed(task: asyncio.Task[None]) -> None:
    _reading.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: the reader raised it, or was gone already


class UpstreamStream:
    """Send ``request`` and hand over the response body as byte blocks.

    ``error_for(response, body)`` turns a status >= 400 into the exception to raise.
    Always ``close()`` it (it never awaits, so it is safe in a cancelled task's finally).
    """

    __slots__ = ("_closed", "_owner", "_queue", "_reader")

    def __init__(self, client: httpx.AsyncClient, request: httpx.Request,
                 error_for: Callable[[httpx.Response, bytes], Exception]) -> None:
        # A little read-ahead (a real model is slower than the socket); past it, a slow
        # consumer slows the socket reads down instead of buffering the answer here.
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=4)
        self._closed = False
        self._reader = asyncio.get_running_loop().create_task(
            _read(self._queue, client, request, error_for))
        _reading.add(self._reader)
        self._reader.add_done_callback(_reading.discard)
        self._owner = _scope.get()
        if self._owner is not None:
            self._owner.add(self)

    async def next_block(self) -> bytes | None:
        """The next block of the body, or None at its end; raises the reader's error."""
        item = await self._queue.get()
        if item is _END:
            return None
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop reading and close the response (the close finishes in the background).

        Idempotent: the reader is cancelled once at most. A second cancellation (the
        request's ``closing_upstreams`` first, the abandoned generator's ``finally``
        later) would land inside httpcore's close and leave the connection open.
        """
        if self._closed:
            return
        self._closed = True
        if self._owner is not None:
            self._owner.discard(self)
            self._owner = None
        reader = self._reader
        if not reader.done():
            reader.cancel()
        while not self._queue.empty():  # blocks nobody will read
            self._queue.get_nowait()
