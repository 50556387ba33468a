"""A rolling restart for real: two replicas (``maritaca-chains serve``, real processes) behind
nginx running deploy/nginx/maritaca-chains.conf, sharing a real redis-server, on the
emulator answering at a slow pace. SIGTERM to one replica loses no answer:

- streams in flight on every face through nginx (``/stream``, ``/stream_events``,
  ``/text``, ``/ws``, resumable runs and their readers) end with their exact text;
- ``/readyz`` says 503 at once, new connections are refused, and what is sent through
  nginx meanwhile is served (by the other replica);
- the replica exits as soon as its streams end, long before the drain cap;
- streams longer than the drain time end with the named ``server_shutting_down`` error in
  their face's protocol, and a run's reader on the other replica gets it from Redis;
- a second SIGTERM stops at once.

Everything listens on 127.0.0.1 at free ports, in a tmp dir; the fixture stops it all.
Skips without nginx or redis-server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from maritaca.local import free_port
from maritaca.testing import MaritacaEmulator, Scenario, terminate
from tests.child_servers import REDIS_SERVER, ROOT, start_redis, wait_until
from tests.test_nginx import NGINX, nginx_config

TOKENS, DELAY = 80, 0.05  # an answer takes about 4 s to be made
LONG = Scenario.ok(reply_tokens=2000)  # 100 s: longer than any drain here
STORY = {"input": {"topic": "Brasil"}}
# the same answer through the client faces: OpenAI's /v1 and the AI SDK's
CLIENT_BODIES = {
    "/v1/chat/completions": {"model": "story", "stream": True,
                             "messages": [{"role": "user", "content": "Brasil"}]},
    "/story/ai-sdk": {"id": "chat-restart", "trigger": "submit-message", "messages": [
        {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Brasil"}]}]},
}
SHUTTING_DOWN = "server_shutting_down"

pytestmark = [
    pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed"),
    pytest.mark.skipif(not os.access(REDIS_SERVER, os.X_OK),
                       reason="redis-server is not installed (make install-dev)"),
    pytest.mark.timeout(240),
]


class Replica:
    """One ``maritaca-chains serve`` process on a fixed port (restartable on it)."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        self.env, self.port = env, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"replica-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **settings: str) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "maritaca_chains", "serve", "--port", str(self.port)],
                cwd=ROOT, env={**self.env, **settings}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT)
        proc = self.proc
        wait_until(lambda: proc.poll() is None
                   and httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200,
                   f"the replica at {self.url}", timeout=90)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=10)


class Stack:
    def __init__(self, emu: MaritacaEmulator, url: str, a: Replica, b: Replica,
                 access_log: Path) -> None:
        self.emu, self.url, self.a, self.b, self.access_log = emu, url, a, b, access_log

    def upstreams(self, prefix: str) -> set[str]:
        """The replicas (host:port) nginx sent requests starting with ``prefix`` to."""
        return {address.strip(",") for line in self.access_log.read_text().splitlines()
                if line.startswith(prefix) for address in line.split()[2:]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("restart")
    with MaritacaEmulator(reply_tokens=TOKENS, token_delay=DELAY) as emu, \
            start_redis(workdir) as redis_port:
        env = {**os.environ, "MARITACA_API_KEY": emu.api_key or "k",
               "MARITACA_BASE_URL": emu.base_url, "MARITACA_BACKEND": "maritaca",
               "MARITACA_CHAINS_UI": "false", "MARITACA_CHAINS_LOG_LEVEL": "warning",
               "MARITACA_CHAINS_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
               "MARITACA_CHAINS_DRAIN_SECONDS": "60"}
        a, b = Replica(env, workdir, "a"), Replica(env, workdir, "b")
        nginx = None
        try:
            a.start()
            b.start()
            port = free_port()
            config = nginx_config(workdir, port, [a.url, b.url])
            nginx = subprocess.Popen([NGINX, "-p", str(workdir), "-e", str(workdir / "error.log"),
                                      "-c", str(config), "-g", "daemon off;"],
                                     stdin=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: httpx.get(f"{url}/livez", timeout=2).status_code == 200, "nginx")
            yield Stack(emu, url, a, b, workdir / "access.log")
        finally:
            if nginx is not None:
                terminate(nginx, timeout=10)
            a.stop()
            b.stop()


@pytest.fixture
def emu(stack: Stack) -> MaritacaEmulator:
    stack.emu.reset()
    return stack.emu


# ---------------------------------------------------------------------------- the faces

def sse_events(body: str) -> list[tuple[str, str]]:
    """(event, data) of every SSE event in ``body``."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in fields:
            events.append((fields["event"], fields.get("data", "")))
    return events


def stream_text(path: str, body: str) -> str:
    """The answer's text in a LangServe ``/stream`` or ``/stream_events`` body (or a run's)."""
    text = ""
    for event, data in sse_events(body):
        if event != "data":
            continue
        value = json.loads(data)
        if path.endswith("/stream_events"):
            if value["event"] == "on_chat_model_stream":
                text += value["data"]["chunk"]["content"]
        else:
            text += value
    return text


class Flight:
    """One stream through a face; ``started`` once its first bytes arrived."""

    def __init__(self, face: str) -> None:
        self.face = face
        self.started = asyncio.Event()
        self.body = ""          # HTTP faces: the whole body
        self.frames: list[str] = []  # WebSocket: every frame
        self.close_code: int | None = None
        self.run_id = ""

    @property
    def text(self) -> str:
        if self.face == "ws":
            return "".join(f for f in self.frames if not f.startswith("["))
        if self.face == "/story/text":
            return self.body
        return stream_text(self.face, self.body)

    def last_event(self) -> tuple[str, str]:
        return sse_events(self.body)[-1]


async def http_stream(http: httpx.AsyncClient, flight: Flight, path: str,
                      body: dict[str, Any] | None = None) -> None:
    async with http.stream("POST", path, json=body or STORY) as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_text():
            flight.body += chunk
            flight.started.set()


async def ws_stream(base: str, flight: Flight, *, until_closed: bool = False) -> None:
    """One input; its frames up to ``[END]`` (or until the server closes)."""
    async with connect(base.replace("http", "ws", 1) + "/story/ws") as ws:
        await ws.send("Brasil")
        try:
            while True:
                flight.frames.append(str(await ws.recv()))
                flight.started.set()
                if flight.frames[-1] == "[END]" and not until_closed:
                    break
        except ConnectionClosed as exc:
            flight.close_code = exc.rcvd.code if exc.rcvd else None


async def run_start(http: httpx.AsyncClient, flight: Flight) -> str:
    response = await http.post("/story/runs", json=STORY)
    assert response.status_code == 201, response.text
    flight.run_id = response.json()["run_id"]
    return str(response.json()["stream_url"])


async def run_read(http: httpx.AsyncClient, flight: Flight, stream_url: str) -> None:
    async with http.stream("GET", stream_url) as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_text():
            flight.body += chunk
            if "event: data" in flight.body:
                flight.started.set()


async def launch(tasks: list[asyncio.Task[None]], flight: Flight, job: Any) -> Flight:
    """Start ``job`` and wait until its stream is under way (so nginx picks replicas in
    turn, and every stream is in flight when the signal comes)."""
    tasks.append(asyncio.create_task(job))
    await asyncio.wait_for(flight.started.wait(), 30)
    return flight


def reference_text(url: str) -> str:
    response = httpx.post(f"{url}/story/invoke", json=STORY, timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["output"])


# ---------------------------------------------------------------------------- the tests

async def test_sigterm_lets_every_stream_on_every_face_finish(stack: Stack,
                                                              emu: MaritacaEmulator) -> None:
    expected = reference_text(stack.url)
    a = stack.a
    assert a.proc is not None and a.proc.poll() is None
    tasks: list[asyncio.Task[None]] = []
    flights: list[Flight] = []
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as http, \
            httpx.AsyncClient(base_url=a.url, timeout=10) as on_a:
        assert (await on_a.get("/readyz")).status_code == 200  # a kept-alive connection
        # two of each, one after the other: nginx gives one to each replica
        for face in ("/story/stream", "/story/stream_events", "/story/text"):
            for _ in range(2):
                flight = Flight(face)
                flights.append(await launch(tasks, flight, http_stream(http, flight, face)))
        for _ in range(2):
            flight = Flight("ws")
            flights.append(await launch(tasks, flight, ws_stream(stack.url, flight)))
        # resumable runs: one runs on each replica and is read through the other
        for turn in range(2):
            flight = Flight("run")
            stream_url = await run_start(http, flight)
            flights.append(await launch(tasks, flight, run_read(http, flight, stream_url)))
            if turn == 0:
                assert (await http.get("/livez")).status_code == 200  # shifts nginx's turn

        a.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert (await on_a.get("/readyz")).status_code == 503  # at once
        assert (await on_a.get("/livez")).status_code == 200

        def refused() -> bool:
            try:
                httpx.get(f"{a.url}/livez", timeout=2)
            except httpx.ConnectError:
                return True
            return False

        await asyncio.to_thread(wait_until, refused, "refusing new connections", 5)
        # sent during the drain: all served, by the other replica
        during = [asyncio.create_task(http.post("/story/invoke", json=STORY))
                  for _ in range(4)]
        late = [Flight("/story/text") for _ in range(2)]
        during += [asyncio.create_task(http_stream(http, f, "/story/text")) for f in late]
        assert a.proc.poll() is None, "the replica left before its streams ended"
        results = await asyncio.gather(*during)
        for response in results[:4]:
            assert response.status_code == 200, response.text
            assert response.json()["output"] == expected
        assert [f.text for f in late] == [expected, expected]

        await asyncio.gather(*tasks)
        ended = time.monotonic()
        exit_code = await asyncio.to_thread(a.proc.wait, 30)
        exited = time.monotonic()

    for flight in flights:
        assert flight.text == expected, (flight.face, flight.body or flight.frames)
        if flight.face == "ws":
            assert flight.frames[-1] == "[END]"
        elif flight.face != "/story/text":
            assert flight.last_event()[0] == "end", (flight.face, flight.body[-300:])
    # it left as soon as its streams ended, not at the 60 s drain cap
    assert exited - ended < 10, (exited - ended, exited - signalled)
    assert exit_code in (0, -signal.SIGTERM)
    # every face (a run and a reader too) had a stream in flight on the stopped replica
    where_a = a.url.removeprefix("http://")
    for prefix in ("/story/stream ", "/story/stream_events ", "/story/text ", "/story/ws ",
                   "/story/runs ", "/story/runs/"):
        assert where_a in stack.upstreams(prefix), prefix


async def test_streams_longer_than_the_drain_end_with_the_named_error(
        stack: Stack, emu: MaritacaEmulator) -> None:
    a, b = stack.a, stack.b
    a.stop()
    a.start(MARITACA_CHAINS_DRAIN_SECONDS="2")
    emu.enqueue(*[LONG] * 7)
    tasks: list[asyncio.Task[None]] = []
    flights: dict[str, Flight] = {}
    async with httpx.AsyncClient(base_url=a.url, timeout=60) as on_a, \
            httpx.AsyncClient(base_url=b.url, timeout=60) as on_b:
        for face in ("/story/stream", "/story/stream_events", "/story/text"):
            flight = Flight(face)
            flights[face] = await launch(tasks, flight, http_stream(on_a, flight, face))
        for face, body in CLIENT_BODIES.items():
            flight = Flight(face)
            flights[face] = await launch(tasks, flight, http_stream(on_a, flight, face, body))
        flights["ws"] = await launch(tasks, flight := Flight("ws"), ws_stream(a.url, flight,
                                                                until_closed=True))
        run = Flight("run")  # runs on the replica that stops, read on the other one
        stream_url = await run_start(on_a, run)
        flights["run"] = await launch(tasks, run, run_read(on_b, run, stream_url))

        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await asyncio.to_thread(a.proc.wait, 30)
        status = (await on_b.get(f"/story/runs/{run.run_id}")).json()

    for face in ("/story/stream", "/story/stream_events", "run"):
        event, data = flights[face].last_event()
        assert event == "error", (face, flights[face].body[-300:])
        assert json.loads(data)["type"] == SHUTTING_DOWN
        assert json.loads(data)["status_code"] == 503
        assert len(flights[face].text) > 10  # it was answering
    text = flights["/story/text"].body
    assert text.endswith(f"({SHUTTING_DOWN}) before this answer ended; send the request "
                         f"again: another replica will answer.\n")
    assert "\n[ERROR] " in text
    frames = flights["ws"].frames
    assert frames[-1] == "[END]" and frames[-2].startswith("[ERROR] ")
    assert json.loads(frames[-2].removeprefix("[ERROR] "))["type"] == SHUTTING_DOWN
    assert flights["ws"].close_code == 1012  # service restart: reconnect
    # the client faces end in their own protocols: an error the SDKs raise on
    openai_tail = flights["/v1/chat/completions"].body.strip().splitlines()[-1]
    assert json.loads(openai_tail.removeprefix("data: "))["error"]["code"] == SHUTTING_DOWN
    ai_sdk = flights["/story/ai-sdk"].body
    assert ai_sdk.endswith("data: [DONE]\n\n") and '"type":"text-delta"' in ai_sdk
    error_parts = [json.loads(line[6:]) for line in ai_sdk.splitlines()
                   if line.startswith('data: {"type": "error"') or
                   line.startswith('data: {"type":"error"')]
    assert error_parts and SHUTTING_DOWN in error_parts[-1]["errorText"]
    assert status["status"] == "cancelled"
    # the model calls were closed, not left running
    assert all(r.client_disconnected for r in emu.requests if r.path.endswith("/completions"))


async def test_a_second_sigterm_stops_at_once(stack: Stack, emu: MaritacaEmulator) -> None:
    a = stack.a
    a.stop()
    a.start()  # drains for up to 60 s
    emu.enqueue(LONG)
    tasks: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(base_url=a.url, timeout=60) as on_a:
        flight = Flight("/story/text")
        await launch(tasks, flight, http_stream(on_a, flight, "/story/text"))
        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.5)
        assert a.proc.poll() is None  # draining: 60 s at most
        a.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(a.proc.wait, 10)
        await asyncio.gather(*tasks, return_exceptions=True)
