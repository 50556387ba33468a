"""``LeanEventSourceResponse`` behaves as sse-starlette's ``EventSourceResponse`` does, behind a real
uvicorn: the same bytes and headers, pings, the end at a hang-up and at the exit signal,
and errors raised the same way. Each test runs both side by side, with the encoder the
server installs (``sse_encoding``)."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
from sse_starlette.sse import AppStatus, EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from maritaca_chains.langserve_compat import sse_encoding
from maritaca_chains.langserve_compat.sse_response import LeanEventSourceResponse
from tests.conftest import RunningServer

KINDS = [EventSourceResponse, LeanEventSourceResponse]
assert sse_encoding.install(), "the server's SSE encoder no longer matches sse-starlette's"
EVENTS = [{"event": "metadata", "data": '{"run_id": "r1"}'},
          {"event": "data", "data": '"Era uma vez"'}, {"event": "data", "data": '" um sabiá"'},
          {"event": "end"}]


class Seen:
    """What the server side saw: the generator's end, the error the app raised, the loop."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.raised: list[BaseException] = []
        self.loop: asyncio.AbstractEventLoop | None = None


def app_for(kind: type[EventSourceResponse], seen: Seen) -> Any:
    async def events(pause: float, count: int, fail: bool,
                     swallow: int) -> AsyncIterator[dict[str, str]]:
        try:
            for index in range(count):
                yield EVENTS[index % len(EVENTS)]
                try:
                    await asyncio.sleep(pause)
                except asyncio.CancelledError:
                    # as Python 3.11's asyncio.wait_for may, when its wait ends as the
                    # cancellation comes (the runs' store waits so)
                    if swallow <= 0:
                        raise
                    swallow -= 1
            if fail:
                raise RuntimeError("o modelo caiu")
        finally:
            seen.closed.set()

    async def stream(request: Request) -> Any:
        seen.loop = asyncio.get_running_loop()
        query = request.query_params
        return kind(events(float(query.get("pause", 0)), int(query.get("count", 4)),
                           "fail" in query, int(query.get("swallow", 0))),
                    ping=float(query.get("ping", 15)))  # type: ignore[arg-type]

    inner = Starlette(routes=[Route("/stream", stream)])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await inner(scope, receive, send)
        except BaseException as exc:
            seen.raised.append(exc)
            raise

    return app


def served(kind: type[EventSourceResponse], test: Callable[[str, Seen], None]) -> None:
    seen = Seen()
    with RunningServer(app_for(kind, seen)) as server:
        test(server.url, seen)


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_bytes_and_headers(kind):
    def test(url: str, seen: Seen) -> None:
        response = httpx.get(f"{url}/stream", timeout=10)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.content == (
            b'event: metadata\r\ndata: {"run_id": "r1"}\r\n\r\n'
            b'event: data\r\ndata: "Era uma vez"\r\n\r\n'
            + 'event: data\r\ndata: " um sabiá"\r\n\r\n'.encode() + b"event: end\r\n\r\n")

    served(kind, test)


@pytest.mark.parametrize("kind", KINDS)
def test_pings_keep_a_quiet_stream_alive(kind):
    def test(url: str, seen: Seen) -> None:
        response = httpx.get(f"{url}/stream", params={"ping": 0.1, "pause": 0.25, "count": 2},
                             timeout=10)
        ping = rb": ping - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\r\n\r\n"
        assert len(re.findall(ping, response.content)) >= 3, response.content
        assert re.sub(ping, b"", response.content) == (  # the events, whole and in order
            b'event: metadata\r\ndata: {"run_id": "r1"}\r\n\r\n'
            b'event: data\r\ndata: "Era uma vez"\r\n\r\n')

    served(kind, test)


@pytest.mark.parametrize("kind", KINDS)
def test_a_hang_up_ends_the_stream_without_an_error(kind):
    def test(url: str, seen: Seen) -> None:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /stream?pause=0.01&count=100000 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert b"event: metadata" in sock.recv(4096)
        assert seen.closed.wait(5), "the stream went on after the client hung up"
        time.sleep(0.1)
        assert seen.raised == []

    served(kind, test)


@pytest.mark.parametrize("kind", KINDS)
def test_a_hang_up_ends_a_stream_that_swallows_a_cancellation(kind):
    """Code on the stream's way may swallow a cancellation; the stream must still end
    soon after the hang-up, not run on to its end for nobody."""
    def test(url: str, seen: Seen) -> None:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /stream?pause=0.01&count=100000&swallow=3 HTTP/1.1\r\n"
                         b"Host: t\r\n\r\n")
            assert b"event: metadata" in sock.recv(4096)
        assert seen.closed.wait(5), "the stream went on after the client hung up"

    served(kind, test)


@pytest.mark.parametrize("kind", KINDS)
def test_the_exit_signal_ends_every_stream(kind):
    """sse-starlette's patch of uvicorn's exit handler sets ``AppStatus``: plain uvicorn
    (not ``maritaca-chains serve``, which drains) ends SSE streams at once, the body cut
    short."""
    def test(url: str, seen: Seen) -> None:
        with httpx.stream("GET", f"{url}/stream", params={"pause": 0.01, "count": 100000},
                          timeout=10) as response:
            lines = response.iter_lines()
            assert next(lines) == "event: metadata"
            assert seen.loop is not None
            try:
                AppStatus.should_exit = True
                event = AppStatus.should_exit_event
                assert event is not None
                seen.loop.call_soon_threadsafe(event.set)
                assert seen.closed.wait(5), "the stream went on after the exit signal"
                with pytest.raises(httpx.RemoteProtocolError):  # cut, as sse-starlette cuts it
                    for _ in lines:
                        pass
            finally:
                AppStatus.should_exit = False
        assert seen.raised == []

    served(kind, test)


@pytest.mark.parametrize("kind", KINDS)
def test_an_error_after_events_reaches_the_middleware_in_a_group(kind):
    """The app's middleware (``error_events``) sees the run's error as sse-starlette's
    task group raised it; Starlette's exception handlers leave a group alone."""
    def test(url: str, seen: Seen) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{url}/stream", params={"fail": 1}, timeout=10)
        assert len(seen.raised) == 1
        group = seen.raised[0]
        assert isinstance(group, ExceptionGroup)
        assert [str(inner) for inner in group.exceptions] == ["o modelo caiu"]

    served(kind, test)


async def _always_ready(read: list[int]) -> AsyncIterator[dict[str, str]]:
    """Events that are ready whenever asked for, as ``astream_events`` hands them over
    (through a queue fed by ``call_soon_threadsafe``)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def produce() -> None:
        for index in range(100_000):
            loop.call_soon_threadsafe(queue.put_nowait, index)
            await asyncio.sleep(0)

    producer = loop.create_task(produce())
    try:
        while True:
            read.append(await queue.get())
            yield {"event": "data", "data": f'"{read[-1]}"'}
    finally:
        producer.cancel()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_cancelled_scope_around_the_response_ends_it_as_its_own(kind):
    """An ASGI test client may run the app in a cancel scope and cancel it to cut an
    endless stream (schemathesis does), with events always ready (anyio's cancellation
    then lands only where ``sse_encoding`` makes it land): the scope must take the
    cancellation as its own, not let it out of the request, and the stream must stop."""
    read: list[int] = []
    bodies = 0

    async def receive() -> dict[str, str]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal bodies
        if message["type"] == "http.response.body" and not cut.cancel_called:
            bodies += 1
            if bodies == 3:
                cut.cancel()

    async def request() -> None:
        nonlocal cut
        with anyio.CancelScope() as cut:
            await kind(_always_ready(read))({"type": "http"}, receive, send)

    cut = anyio.CancelScope()
    await asyncio.wait_for(asyncio.create_task(request()), 10)  # no CancelledError out
    assert cut.cancelled_caught
    assert len(read) < 100  # stopped at once, not read to the end
