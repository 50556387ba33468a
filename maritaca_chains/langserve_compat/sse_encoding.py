"""LangServe streams through sse-starlette's ``EventSourceResponse``, which encodes every
event by building a ``ServerSentEvent`` object and writing it line by line into a
``StringIO`` (regular expressions included), then formats a debug line with the whole
event decoded again even when debug logging is off: without that, an unpaced stream's
chunk costs the server half as much (BENCHMARKS.md, issue 26, third pass).

``install()`` gives ``EventSourceResponse`` a ``stream_response`` that sends the same
bytes, and stops within 16 events once the client has hung up (sse-starlette's own may
read an abandoned ``/stream_events`` answer to its end). LangServe's events (a dict of
``event`` and a one-line ``data``, or ``event`` alone) are formatted in one step,
anything else goes through sse-starlette's own ``ensure_bytes``. The events the
generator has ready at once (``astream_events`` makes three or four per token, an
unpaced answer has many tokens ready) go out in one body message, sent before the
generator waits for its next event: one write and one pass through the middleware
instead of one per event, and no event held back. It is installed only if, at the time,
both ways give identical bytes for a set of probe events and for a probe response
(``matches()``); otherwise sse-starlette is left as it is.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import AsyncIterator, Generator
from typing import Any

from anyio import current_effective_deadline
from anyio.lowlevel import checkpoint
from sse_starlette import sse

__all__ = ["CHECK_EVERY", "READY_AT_MOST", "event_bytes", "install", "matches"]

_ORIGINAL = sse.EventSourceResponse.stream_response
_log = logging.getLogger(sse.__name__)  # sse-starlette's own logger
CHECK_EVERY = 16  # events between two looks at whether the client hung up (below)
READY_AT_MOST = 64  # events sent together at most (an unpaced answer has them all ready)


def event_bytes(data: Any, sep: str) -> bytes:
    """One event as sse-starlette encodes it (``ensure_bytes``), in one step for
    LangServe's shapes; an event already encoded (``stream_route``'s data events) as it
    is, as ``ensure_bytes`` sends bytes."""
    if type(data) is bytes:
        return data
    if type(data) is dict:
        event, payload = data.get("event"), data.get("data")
        if type(event) is str and len(data) == 1 + ("data" in data) \
                and "\n" not in event and "\r" not in event:
            if payload is None:
                return f"event: {event}{sep}{sep}".encode()
            if type(payload) is str and "\n" not in payload and "\r" not in payload:
                return f"event: {event}{sep}data: {payload}{sep}{sep}".encode()
    return sse.ensure_bytes(data, sep)


async def _stream_response(self: sse.EventSourceResponse, send: Any) -> None:
    """``EventSourceResponse.stream_response``, encoding with ``event_bytes``, sending the
    events the generator has ready together, and ending as soon as the client has hung
    up (below)."""
    await send({"type": "http.response.start", "status": self.status_code,
                "headers": self.raw_headers})
    sep = self.sep
    body = aiter(self.body_iterator)
    task = asyncio.current_task()
    cancelling = False
    events = 0
    ready: list[bytes] = []  # encoded, not sent: the generator had the next one ready
    debug = _log.isEnabledFor(logging.DEBUG)  # sse-starlette's line per event, if wanted
    try:
        while True:
            # The next event, started by hand: if the generator has it ready, it comes
            # without a wait and joins ``ready``; if it must wait (the upstream, the
            # next callback), what is ready goes out first, then the wait goes on.
            step = body.__anext__().__await__()
            try:
                waits_on = step.send(None)
            except StopIteration as got:
                data = got.value
            except StopAsyncIteration:
                break
            except Exception:
                if ready:  # what came before the failure (LangServe's error event too)
                    await _send_ready(send, ready)
                raise
            else:
                if ready:
                    await _sent_before(send, ready, step, waits_on)
                try:
                    data = await _Resumed(step, waits_on)
                except StopAsyncIteration:
                    break
            events += 1
            if events % CHECK_EVERY == 0 and not cancelling \
                    and current_effective_deadline() == -math.inf:
                # The hang-up has cancelled this task's scope, but anyio delivers that
                # only while the task waits on a future not done yet, and a generator
                # whose events come through ``call_soon`` (``astream_events``' stream)
                # always has its next one ready by then: an abandoned answer was read to
                # its end (2 s for 32,000 tokens). Cancelled here, the task stops where
                # the generator next waits, as it would have there, and it cleans up
                # as on any hang-up (this event goes nowhere: the client is gone).
                # Looked at every CHECK_EVERY-th event: the look costs a few µs, a
                # paced stream's cancellation arrives without it, and a ready one sends
                # 16 events in well under a millisecond.
                cancelling = True
                task.cancel()  # type: ignore[union-attr]
                continue
            chunk = event_bytes(data, sep)
            if debug:
                _log.debug("chunk: %s", chunk.decode())
            ready.append(chunk)
            if len(ready) == READY_AT_MOST:
                await _send_ready(send, ready)
        if ready:
            await _send_ready(send, ready)
        async with self._send_lock:
            self.active = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if cancelling:
            # Ours, which carries no cancel scope's name: taken back, and the scope's own
            # cancellation, still pending, lands at this checkpoint instead, so that the
            # scope knows it as its own and ends the response as a hang-up does.
            task.uncancel()  # type: ignore[union-attr]
            await checkpoint()
        raise


async def _send_ready(send: Any, ready: list[bytes]) -> None:
    body = b"".join(ready)
    ready.clear()
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _sent_before(send: Any, ready: list[bytes], step: Any, waits_on: Any) -> None:
    """``_send_ready`` while ``step`` (the next event) waits on ``waits_on``. If the send
    fails (the client hung up: a cancellation), the generator gets the failure where it
    waits, as it would have without this send, so that it cleans up as on any hang-up;
    then the failure is raised here. What it waits on is cancelled first, as a task's
    cancellation cancels it: a task it awaits (an LCEL step's) ends there, instead of
    running on, its upstream answer read to the end. A cancellation then reaches the
    generator as a task's does, once that has ended; any other failure is thrown in."""
    try:
        await _send_ready(send, ready)
    except BaseException as failure:
        try:
            cancelled = asyncio.isfuture(waits_on) and waits_on.cancel()
            if cancelled and isinstance(failure, asyncio.CancelledError):
                await _Resumed(step, waits_on)
            else:
                await _Resumed(step, step.throw(failure))
        except BaseException:  # noqa: BLE001, S110 - the send's failure is the one raised
            pass
        raise


class _Resumed:
    """``await`` of ``step`` (an ``__anext__`` run by hand up to ``waits_on``, what it
    waits on), resumed: the task waits on what it waits on, and cancellations and other
    exceptions thrown into the task go into it."""

    __slots__ = ("step", "waits_on")

    def __init__(self, step: Any, waits_on: Any) -> None:
        self.step, self.waits_on = step, waits_on

    def __await__(self) -> Generator[Any, Any, Any]:
        return _resumed(self.step, self.waits_on)


def _resumed(step: Any, waits_on: Any) -> Generator[Any, Any, Any]:
    while True:
        try:
            received = yield waits_on
        except GeneratorExit:
            step.close()
            raise
        except BaseException as thrown:  # noqa: BLE001 - passed on to the step
            try:
                waits_on = step.throw(thrown)
            except StopIteration as done:
                return done.value
        else:
            try:
                waits_on = step.send(received)
            except StopIteration as done:
                return done.value


# Events as LangServe sends them, and the shapes that must take sse-starlette's own path
_PROBES: list[Any] = [
    {"event": "data", "data": '"Era uma vez"'},
    {"event": "metadata", "data": '{"run_id": "4b46c61c", "feedback_tokens": []}'},
    {"event": "end"},
    {"event": "error", "data": '{"status_code": 500, "message": "Internal Server Error"}'},
    {"event": "data", "data": "duas\nlinhas\r\ne mais\runa"},
    {"event": "quebra\nde linha", "data": "x"},
    {"event": "data", "data": ""},
    {"data": "só dados"},
    {"event": "data", "data": 3},
    {"event": "data", "data": "x", "id": "7", "retry": 1000},
    {"event": "data", "data": None},
    {"event": None, "data": "x"},
    b"event: pronto\r\n\r\n",
    "texto solto",
    sse.ServerSentEvent(data="com objeto", event="data", comment="nota"),
]


def _fresh(probe: Any) -> Any:
    """A copy of a dict probe (``ensure_bytes`` writes ``sep`` into the dicts it gets)."""
    return dict(probe) if isinstance(probe, dict) else probe


def _probe_bytes_match() -> bool:
    return all(event_bytes(_fresh(probe), sep) == sse.ensure_bytes(_fresh(probe), sep)
               for sep in ("\r\n", "\n", "\r") for probe in _PROBES)


async def _messages(stream_response: Any) -> list[dict[str, Any]]:
    async def events() -> AsyncIterator[Any]:
        for probe in _PROBES:
            yield _fresh(probe)

    response = sse.EventSourceResponse(events())
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await stream_response(response, send)
    return [*_joined(sent), {"active": response.active}]


def _joined(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with each run of body messages that say more follows as one: what
    a client reads is the same whichever way the bytes were split."""
    joined: list[dict[str, Any]] = []
    for message in messages:
        last = joined[-1] if joined else None
        if last is not None and message["type"] == last["type"] == "http.response.body" \
                and last.get("more_body"):
            joined[-1] = {**message, "body": last["body"] + message["body"]}
        else:
            joined.append(message)
    return joined


def matches() -> bool:
    """Whether ``event_bytes`` and ``_stream_response`` send exactly what sse-starlette
    would, for every probe: the same bytes, in as many or fewer body messages."""
    try:
        if not _probe_bytes_match():
            return False
        return _alone(_messages(_ORIGINAL)) == _alone(_messages(_stream_response))
    except Exception:  # noqa: BLE001 - sse-starlette changed under us: leave it alone
        return False


def _alone(coroutine: Any) -> Any:
    """Run ``coroutine`` on an event loop of its own (the caller's may be running)."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(coroutine)))
    thread.start()
    thread.join()
    if not result:
        raise RuntimeError("the probe failed")
    return result[0]


_INSTALLED: bool | None = None


def install() -> bool:
    """Give ``EventSourceResponse`` the one-step encoder if it sends the same bytes
    (checked once per process); whether it did."""
    global _INSTALLED
    if _INSTALLED is None:
        _INSTALLED = matches()
        if _INSTALLED:
            sse.EventSourceResponse.stream_response = _stream_response  # type: ignore[method-assign]
    return _INSTALLED
