"""Nothing unbounded reaches the server: the tests play a client that sends too much,
too deep or too slowly, over real sockets against a real uvicorn.

- a request head over ``MARITACA_CHAINS_MAX_HEADER_BYTES`` gets 431 while it is still
  arriving, in one line or many; a connection that sends no complete head within
  ``MARITACA_CHAINS_HEADER_TIMEOUT_SECONDS`` (nothing at all, a slow trickle, or after a
  keep-alive response) is closed;
- a body over its cap gets 413 by its ``Content-Length`` before it is sent, or while it
  streams in chunks, on every route (``/login``'s cap is 4 KiB);
- JSON nested 10,000 deep is a 422 / an ``invalid_input`` frame, never a
  ``RecursionError``; WebSocket inputs queue at most ``MARITACA_CHAINS_WS_MAX_QUEUED``
  and a frame over the body cap closes the socket (1009).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.cli import uvicorn_limits
from maritaca_chains.connection_limits import bounded_http_protocol
from maritaca_chains.faces.websocket import END
from maritaca_chains.settings import ServerSettings
from tests.child_servers import serve
from tests.conftest import RunningServer, emulator_model

HEAD_LIMIT = 8 * 1024
HEAD_TIMEOUT = 0.6
BODY_LIMIT = 64 * 1024
DEEP = "[" * 10_000 + "]" * 10_000


def settings(**env: Any) -> ServerSettings:
    return ServerSettings(_env_file=None, MARITACA_CHAINS_UI="false",  # type: ignore[call-arg]
                          MARITACA_CHAINS_MAX_BODY_BYTES=BODY_LIMIT, **env)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[MaritacaEmulator, RunningServer]]:
    """The app behind uvicorn configured as ``maritaca-chains serve`` configures it."""
    with MaritacaEmulator(reply_tokens=200, token_delay=0.01) as emu:
        config = settings(MARITACA_CHAINS_MAX_HEADER_BYTES=HEAD_LIMIT,
                          MARITACA_CHAINS_HEADER_TIMEOUT_SECONDS=HEAD_TIMEOUT)
        app = create_app(config, model=emulator_model(emu))
        with RunningServer(app, http=bounded_http_protocol(HEAD_LIMIT, HEAD_TIMEOUT),
                           **uvicorn_limits(config)) as running:
            yield emu, running


def address(server: RunningServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def raw(server: RunningServer) -> socket.socket:
    sock = socket.create_connection(address(server), timeout=5)
    return sock


def read_all(sock: socket.socket, limit: float = 5.0) -> bytes:
    """What the server sends until it closes the connection (``limit`` seconds at most)."""
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


# ------------------------------------------------------------------ request heads


def test_a_normal_request_passes(server):
    _, running = server
    assert httpx.get(f"{running.url}/healthz", headers={"x-pad": "a" * 4000}).status_code == 200


@pytest.mark.parametrize("shape", ["one header", "many headers", "long url"])
def test_a_head_over_the_limit_gets_431_while_it_arrives(server, shape):
    _, running = server
    with raw(running) as sock:
        if shape == "long url":
            sock.sendall(b"GET /healthz?q=" + b"a" * 4096)
            piece = b"a" * 4096
        else:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            piece = b"x-pad: " + b"a" * 4096 if shape == "one header" else b"x-a: b\r\n" * 500
        sent = 0
        try:
            for _ in range(25_000):  # up to 100 MB, never needed
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"head_too_large" in answer
    assert "Os cabeçalhos do pedido (com a linha do pedido) passam de".encode() in answer
    assert sent < 4 * 2**20, "the server read far past the limit before refusing"


def test_a_connection_that_sends_nothing_is_closed(server):
    _, running = server
    with raw(running) as sock:
        assert closed_within(sock, HEAD_TIMEOUT + 2)


def test_a_head_sent_a_byte_at_a_time_is_closed_at_the_deadline(server):
    _, running = server
    with raw(running) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        closed = False
        for byte in b"x-slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_within(sock, 0.1):
                closed = True
                break
        assert closed and time.monotonic() - started < HEAD_TIMEOUT + 2


def test_a_keep_alive_connection_owes_its_next_head_in_time(server):
    _, running = server
    with raw(running) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
        assert closed_within(sock, HEAD_TIMEOUT + 2)


def test_a_slow_response_is_not_cut_by_the_head_deadline(server):
    emu, running = server
    with httpx.stream("POST", f"{running.url}/story/text", json={"topic": "Brasil"},
                      timeout=20) as response:
        text = "".join(response.iter_text())  # 200 tokens at 10 ms: past the deadline
    assert response.status_code == 200
    assert text.startswith(emu.expected_text(emu.requests[-1].body["messages"])[:20])


# ------------------------------------------------------------------ request bodies


@pytest.mark.parametrize("path,cap", [("/login", 4096), ("/story/invoke", BODY_LIMIT),
                                      ("/story/runs", BODY_LIMIT), ("/healthz", BODY_LIMIT)])
def test_a_declared_length_over_the_cap_is_refused_before_the_body(server, path, cap):
    emu, running = server
    calls = len(emu.requests)
    kind = "application/x-www-form-urlencoded" if path == "/login" else "application/json"
    with raw(running) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: {kind}\r\n"
                     f"content-length: {250 * 2**20}\r\n\r\n".encode())
        answer = read_all(sock)  # no body sent: the answer comes anyway
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"body_too_large" in answer
    size = f"{cap // 2**20} MiB" if cap % 2**20 == 0 else f"{cap} bytes"
    assert f"O corpo do pedido passa de {size} (MARITACA_CHAINS_MAX_BODY_BYTES".encode() \
        in answer
    assert len(emu.requests) == calls


@pytest.mark.parametrize("path", ["/login", "/story/stream", "/story/text"])
def test_a_chunked_body_is_refused_as_it_streams_past_the_cap(server, path):
    emu, running = server
    calls = len(emu.requests)
    kind = "application/x-www-form-urlencoded" if path == "/login" else "application/json"
    piece = b"a" * 16384
    with raw(running) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: {kind}\r\n"
                     f"transfer-encoding: chunked\r\n\r\n".encode())
        sent = 0
        try:
            for _ in range(16_000):  # 250 MB if nothing stopped it
                sock.sendall(b"4000\r\n" + piece + b"\r\n")
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert sent < 16 * 2**20, "the server kept reading past the cap"
    assert len(emu.requests) == calls


def test_bytes_past_a_declared_length_are_never_read_as_the_body(server):
    """A body with a length under the cap is read to that length and no further: what
    follows is the next request (``BodyLimit`` counts only chunked bodies, on that)."""
    emu, running = server
    body = json.dumps({"input": {"topic": "Brasil"}}).encode()
    padding = b" " * (2 * BODY_LIMIT)  # past the cap, were it read as the body
    with raw(running) as sock:
        sock.sendall(b"POST /story/invoke HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"content-type: application/json\r\n"
                     + f"content-length: {len(body)}\r\n\r\n".encode() + body
                     + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"connection: close\r\n\r\n" + padding)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert emu.expected_text(emu.requests[-1].body["messages"])[:20].encode() in answer
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer[-300:]  # then the pipelined GET
    assert b"body_too_large" not in answer


def test_a_body_under_the_cap_still_runs(server):
    emu, running = server
    response = httpx.post(f"{running.url}/summarize/invoke",
                          json={"input": {"text": "Brasil. " * 6000}}, timeout=30)
    assert response.status_code == 200, response.text[:300]


# ------------------------------------------------------------------ JSON depth


@pytest.mark.parametrize("path", ["/story/invoke", "/story/stream", "/story/batch",
                                  "/story/text", "/story/runs", "/story/ai-sdk",
                                  "/v1/chat/completions", "/chat/threads"])
def test_deeply_nested_json_is_a_422_on_every_route(server, path):
    emu, running = server
    calls = len(emu.requests)
    for body in (DEEP, '{"input": {"topic": ' + "[" * 40 + "]" * 40 + "}}"):
        response = httpx.post(f"{running.url}{path}", content=body, timeout=10,
                              headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        if path.startswith("/v1/"):  # OpenAI's shape: code is the cause
            assert response.json()["error"]["code"] in ("json_too_deep", "json_invalid")
        else:
            detail = response.json()["detail"]
            assert detail[0]["type"] in ("json_too_deep", "json_invalid"), detail
    assert len(emu.requests) == calls


# ------------------------------------------------------------------ WebSocket input


def ws_url(running: RunningServer) -> str:
    return running.url.replace("http://", "ws://") + "/story/ws"


async def test_ws_deep_json_frames_are_errors_and_the_socket_stays(server):
    emu, running = server
    calls = len(emu.requests)
    async with connect(ws_url(running)) as ws:
        for frame in (DEEP, '{"topic": ' + "[" * 10_000, '{"action": ' + DEEP + "}",
                      '{"topic": "x", "deep": ' + "[" * 50 + "]" * 50 + "}"):
            await ws.send(frame)
            async with asyncio.timeout(10):
                reply = [await ws.recv(), await ws.recv()]
            error = json.loads(str(reply[0]).removeprefix("[ERROR] "))
            assert error["type"] == "invalid_input" and reply[1] == END, reply
    assert len(emu.requests) == calls


async def test_ws_inputs_queue_at_most_a_few_and_the_rest_are_refused_by_name(server):
    emu, running = server
    calls = len(emu.requests)
    async with connect(ws_url(running), max_size=None) as ws:
        await ws.send("Brasil")
        assert await ws.recv()  # the run streams
        for topic in ["Pantanal", "Amazônia", "Cerrado", "Caatinga", "Pampa"]:
            await ws.send(topic)
        frames: list[str] = []
        async with asyncio.timeout(30):
            while frames.count(END) < 3:
                frames.append(str(await ws.recv()))
    refused = [json.loads(f.removeprefix("[ERROR] ")) for f in frames
               if f.startswith("[ERROR]")]
    assert [r["type"] for r in refused] == ["queue_full"] * 3
    assert all(r["status_code"] == 429 and "WS_MAX_QUEUED" in r["message"] for r in refused)
    assert len(emu.requests) - calls == 3  # the running one and the two queued


async def test_ws_a_frame_over_the_body_cap_closes_the_socket(server):
    _, running = server
    async with connect(ws_url(running), max_size=None) as ws:
        await ws.send("a" * (BODY_LIMIT + 1))
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


# ------------------------------------------------------------------ the real command


@pytest.mark.timeout(120)
def test_maritaca_chains_serve_runs_with_the_limits(tmp_path):
    """``maritaca-chains serve`` itself: the bounded protocol and the frame cap are on."""
    with MaritacaEmulator(reply_tokens=4) as emu:
        env = {**os.environ, "MARITACA_API_KEY": emu.api_key or "k",
               "MARITACA_BASE_URL": emu.base_url, "MARITACA_BACKEND": "maritaca",
               "MARITACA_CHAINS_UI": "false", "MARITACA_CHAINS_MAX_HEADER_BYTES": "4096",
               "MARITACA_CHAINS_HEADER_TIMEOUT_SECONDS": "1",
               "MARITACA_CHAINS_MAX_BODY_BYTES": "65536"}
        with serve(env, cwd=tmp_path) as (url, _):
            port = int(url.rsplit(":", 1)[1])
            big = httpx.get(f"{url}/healthz", headers={"x-pad": "a" * 8000})
            assert big.status_code == 431
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                assert closed_within(sock, 4)

            async def frame_over_the_cap() -> int | None:
                async with connect(url.replace("http", "ws") + "/story/ws",
                                   max_size=None) as ws:
                    await ws.send("a" * 70_000)
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.recv()
                return closed.value.rcvd.code if closed.value.rcvd else None

            assert asyncio.run(frame_over_the_cap()) == 1009
