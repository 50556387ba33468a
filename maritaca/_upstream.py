"""One streaming HTTP response read in its own task, for ChatMaritaca's ``_astream``.

Why a task: langchain-core runs a model's ``_astream`` inside helper tasks, and when a
LangServe client disconnects, sse-starlette's anyio task group re-cancels the run at
every await. If those cancellations land inside httpcore's read, they also interrupt
httpcore's close: the upstream connection stays open and Maritaca keeps generating
(and billing) tokens nobody reads. Here the response lives in a task that only
``close()`` cancels, exactly once, so httpcore's own shielded close runs to the end and
the upstream sees the connection close at once.

Even one cancellation is safe only at some points of httpcore: its "shielded" sections
are shielded from anyio's cancel scopes, not from ``Task.cancel()``. Landing in the lock
httpcore takes to hand a connection back (httpx closes a fully read response itself, in
the reader: the consumer saw ``[DONE]`` and left as the body ended), or in the same lock
just after a new connection is opened, it leaves the connection marked busy in the pool
for good, its socket open. So the reader follows httpcore's trace events, and ``close()``
cancels it only while it connects, sends, or waits for bytes; anywhere else the reader
stops itself at its next such step (or simply finishes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar

import httpx

__all__ = ["UpstreamStream", "closing_upstreams", "open_upstreams"]

_END = object()
# httpcore's steps (trace event prefixes) during which a cancellation is handled: each
# runs inside a ``try`` that closes the connection (or marks it failed) on any exception.
_CANCELLABLE = frozenset({
    "connection.connect_tcp", "connection.connect_unix_socket", "connection.start_tls",
    "connection.retry", "http11.send_request_headers", "http11.send_request_body",
    "http11.receive_response_headers", "http11.receive_response_body"})
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


class _Abandoned(Exception):
    """Raised by the reader's trace hook to stop it at a safe step, after ``close()``."""


class _Step:
    """Where the reader is in httpcore, from its trace events: whether a cancellation
    may land there now (``cancellable``), and the request to stop at the next step where
    it may (``stop``)."""

    __slots__ = ("cancellable", "stop")

    def __init__(self) -> None:
        self.cancellable = True  # a task not started yet runs none of httpcore
        self.stop = False

    async def trace(self, event: str, info: dict[str, object]) -> None:
        """httpcore's ``trace`` request extension."""
        step, _, when = event.rpartition(".")
        if step in _CANCELLABLE:
            if when == "started":
                if self.stop:
                    raise _Abandoned  # inside httpcore's try: it closes the connection
                self.cancellable = True
            else:  # complete or failed: what follows (the close) must run to its end
                self.cancellable = False


async def _read(queue: asyncio.Queue[object], client: httpx.AsyncClient,
                request: httpx.Request, step: _Step,
                error_for: Callable[[httpx.Response, bytes], Exception]) -> None:
    """The reader task's body. A free function, not a method: a cancelled reader's
    traceback then holds the queue, never the stream that holds the task (no cycle left
    for the collector, and the blocks are freed at once)."""
    step.cancellable = False  # from here on, only while httpcore says so
    put = queue.put
    try:
        response = await client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                raise error_for(response, await response.aread())
            async for block in response.aiter_bytes():
                await put(block)
        finally:
            # A body read to its end has closed itself; any other close runs to its end
            # in a task of its own, even if the reader is cancelled meanwhile.
            if not response.is_closed:
                closing = asyncio.get_running_loop().create_task(response.aclose())
                _reading.add(closing)
                closing.add_done_callback(_closed)
                await asyncio.shield(closing)
    except asyncio.CancelledError:
        raise
    except _Abandoned:  # closed: nobody reads the queue any more
        return
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

    ``error_for(response, body)`` turns a status >= 400 into the exception to raise;
    ``on_end(task)`` is called once the reader has ended (however it ended).
    Always ``close()`` it (it never awaits, so it is safe in a cancelled task's finally).
    """

    __slots__ = ("_closed", "_owner", "_queue", "_reader", "_step")

    def __init__(self, client: httpx.AsyncClient, request: httpx.Request,
                 error_for: Callable[[httpx.Response, bytes], Exception],
                 on_end: Callable[[asyncio.Task[None]], object] | None = None) -> None:
        # A little read-ahead (a real model is slower than the socket); past it, a slow
        # consumer slows the socket reads down instead of buffering the answer here.
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=4)
        self._closed = False
        self._step = step = _Step()
        request.extensions["trace"] = step.trace
        self._reader = asyncio.get_running_loop().create_task(
            _read(self._queue, client, request, step, error_for))
        _reading.add(self._reader)
        self._reader.add_done_callback(_reading.discard)
        if on_end is not None:
            self._reader.add_done_callback(on_end)
        self._owner = _scope.get()
        if self._owner is not None:
            self._owner.add(self)

    async def next_block(self) -> bytes | None:
        """The next block of the body, or None at its end; raises the reader's error."""
        queue = self._queue
        if queue.empty():
            item = await queue.get()
        else:
            # The reader is ahead (a fast upstream): let the loop run once per block
            # anyway, or a client's hang-up would go unnoticed until the answer ends.
            await asyncio.sleep(0)
            item = queue.get_nowait()
        if item is _END:
            return None
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop reading and close the response (the close finishes in the background).

        Idempotent: the reader is cancelled once at most (a second cancellation, from
        the request's ``closing_upstreams`` and then the abandoned generator's
        ``finally``, would land inside httpcore's close), and only at a step where
        httpcore handles it; elsewhere the reader stops at its next such step.
        """
        if self._closed:
            return
        self._closed = True
        if self._owner is not None:
            self._owner.discard(self)
            self._owner = None
        # Decided between two steps of the reader, on its loop: a collector finalising
        # an abandoned request may call this from another thread, or in the middle of
        # the reader's own step, where the step it is at is not yet the one it awaits in.
        loop = self._reader.get_loop()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        with suppress(RuntimeError):  # the loop is closed: its tasks are gone with it
            if running is loop:
                loop.call_soon(_stop, self._reader, self._step, self._queue)
            else:
                loop.call_soon_threadsafe(_stop, self._reader, self._step, self._queue)


def _stop(reader: asyncio.Task[None], step: _Step, queue: asyncio.Queue[object]) -> None:
    """``UpstreamStream.close()``'s work, run on the reader's loop between its steps."""
    if not reader.done():
        if step.cancellable:
            reader.cancel()
        else:  # it stops itself at its next cancellable step, or finishes
            step.stop = True
    while not queue.empty():  # blocks nobody will read (and a reader waiting to put)
        queue.get_nowait()
