"""sse-starlette's ``EventSourceResponse`` for our ``/stream`` and ``/stream_events``,
run without its task group.

sse-starlette runs every response as an anyio task group of four: the stream, a ping
loop, a wait for the server's exit signal and a wait for the client's hang-up, the
first to end cancelling the others. Those extra tasks and the group cost a short answer
about 0.1 ms of server CPU (``bench/bench_event_stream.py``).

``LeanEventSourceResponse`` sends the same bytes (its ``stream_response`` is the
same) and ends in the same cases, with less:

- the stream runs in a plain asyncio task, inside an anyio cancel scope; the hang-up is
  awaited in another, which cancels that scope (``event_stream.StreamEnd``, as our own
  faces' streams end): the response ends without an error, as sse-starlette's does when
  its group is cancelled;
- the ping is a timer that starts a task only when it fires (every 15 s by default),
  and sends what sse-starlette would, under the same send lock;
- the server's exit signal (sse-starlette's ``AppStatus``: its patch of uvicorn's exit
  handler sets it; ``maritaca-chains serve`` never does, it drains instead) is awaited
  by one task per event loop for all the streams live on it, which ends them all;
- an error is raised in an exception group, as the task group raises it;
- the send lock (a ping against the last message) is asyncio's, which takes a free lock
  without the trip through the event loop that anyio's makes.

A response with a ``data_sender_callable`` (LangServe's routes pass none) runs as
sse-starlette runs it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import anyio
from sse_starlette.sse import AppStatus, EventSourceResponse, ServerSentEvent, ensure_bytes
from starlette.types import Receive, Scope, Send

from ..event_stream import StreamEnd

__all__ = ["LeanEventSourceResponse"]

_log = logging.getLogger("sse_starlette.sse")  # where sse-starlette logs its pings


class _ExitWatch:
    """One task on one event loop that waits for the exit signal while streams are live
    there, and stops them all when it comes (it ends with the last of them: no task is
    left behind on a loop that stops)."""

    __slots__ = ("ends", "event", "loop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, event: anyio.Event) -> None:
        self.loop, self.event = loop, event
        self.ends: set[StreamEnd] = set()
        self.task = loop.create_task(self._watch())

    async def _watch(self) -> None:
        try:
            await self.event.wait()
        except RuntimeError:  # the process's one event is bound to another loop's
            _log.debug("the exit signal cannot be awaited on this event loop")
            return
        for end in list(self.ends):
            end.stop()

    def leave(self, end: StreamEnd) -> None:
        """``end``'s stream ended; the watch ends with the last one."""
        global _watch
        self.ends.discard(end)
        if not self.ends:
            self.task.cancel()
            if _watch is self:
                _watch = None


_watch: _ExitWatch | None = None


def _exit_watch(loop: asyncio.AbstractEventLoop, end: StreamEnd) -> _ExitWatch:
    """This loop's watch of the exit signal, with ``end`` in it."""
    global _watch
    if AppStatus.should_exit_event is None:  # as sse-starlette creates it
        AppStatus.should_exit_event = anyio.Event()
    watch = _watch
    if watch is None or watch.loop is not loop or watch.event is not AppStatus.should_exit_event \
            or watch.task.done():
        watch = _watch = _ExitWatch(loop, AppStatus.should_exit_event)
    watch.ends.add(end)
    return watch


class LeanEventSourceResponse(EventSourceResponse):
    """``EventSourceResponse`` without its task group (see the module docstring): two
    plain tasks instead of four anyio ones; the same bytes, pings, hang-up and exit
    signal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Keeps a ping from going out in the middle of the last message, as sse-starlette's
        # anyio lock does; asyncio's takes a free lock without a trip through the loop.
        self._send_lock = asyncio.Lock()  # type: ignore[assignment]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.data_sender_callable is not None:
            await super().__call__(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        end = StreamEnd(self.stream_response(send), receive)
        watch = _exit_watch(loop, end)
        if AppStatus.should_exit:  # sse-starlette's exit wait returns at once: so do we
            loop.call_soon(end.stop)
        pinger = _Pinger(self, send, end, loop)
        try:
            await end.wait()
        finally:
            watch.leave(end)
            pinger.cancel()
        if self.background is not None:
            await self.background()


class _Pinger:
    """``EventSourceResponse._ping``'s pings, from a timer: a task only while one is sent."""

    __slots__ = ("end", "loop", "response", "send", "sending", "timer")

    def __init__(self, response: EventSourceResponse, send: Send, end: StreamEnd,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.response, self.send, self.end, self.loop = response, send, end, loop
        self.sending: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = loop.call_later(response.ping_interval,
                                                                 self._due)

    def _due(self) -> None:
        self.timer = None
        if self.response.active:
            self.sending = self.loop.create_task(self._ping())

    async def _ping(self) -> None:
        response = self.response
        try:
            factory = response.ping_message_factory
            ping = ServerSentEvent(comment=f"ping - {_utcnow()}").encode() if factory is None \
                else ensure_bytes(factory(), response.sep)
            _log.debug(f"ping: {ping.decode()}")  # noqa: G004 - as sse-starlette logs it
            async with response._send_lock:
                if response.active:
                    await self.send({"type": "http.response.body", "body": ping,
                                     "more_body": True})
        except Exception as error:  # noqa: BLE001 - it ends the stream, raised there
            self.end.stop(error)
            return
        finally:
            self.sending = None
        if response.active:
            self.timer = self.loop.call_later(response.ping_interval, self._due)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.sending is not None:
            self.sending.cancel()


def _utcnow() -> datetime:
    """``datetime.utcnow()`` (what sse-starlette's pings show), without its deprecation."""
    return datetime.now(UTC).replace(tzinfo=None)
