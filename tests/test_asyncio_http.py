"""maritaca.asyncio_http on real sockets: what a client of httpx would notice if the
transport under it were wrong (bodies, TLS, errors, pooled connections)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trustme

from maritaca.asyncio_http import AsyncioHTTPTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LIMITS = httpx.Limits(max_connections=10, max_keepalive_connections=10, keepalive_expiry=30)
TIMEOUT = httpx.Timeout(5)  # httpx's default


class Server:
    """A raw HTTP server on 127.0.0.1 (its handler writes the bytes), counting the
    connections it accepted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.handler(reader, writer)


@contextlib.asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None
                  ) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(listener.wait_closed(), 2)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def ok(body: bytes) -> bytes:
    """A whole 200 response carrying ``body``."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def keep_alive(body: bytes, requests: int = 100) -> Handler:
    """Answers up to ``requests`` requests on one connection with ``body``."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(requests):
            await read_request(reader)
            writer.write(ok(body))
            await writer.drain()
        writer.close()
    return handler


def client(ssl_context: ssl.SSLContext | None = None,
           timeout: httpx.Timeout = TIMEOUT) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout, transport=AsyncioHTTPTransport(
        limits=LIMITS, ssl_context=ssl_context))


async def test_keep_alive_connection_is_reused() -> None:
    async with serving(keep_alive(b"ola")) as server, client() as http:
        for _ in range(5):
            response = await http.get(f"http://127.0.0.1:{server.port}/")
            assert (response.status_code, response.text) == (200, "ola")
    assert server.connections == 1


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    """A server's keep-alive timeout closes an idle connection: the next request opens a
    new one instead of failing on the dead one."""
    async with serving(keep_alive(b"ola", requests=1)) as server, client() as http:
        assert (await http.get(f"http://127.0.0.1:{server.port}/")).text == "ola"
        await asyncio.sleep(0.2)  # the server's close arrives while the connection idles
        assert (await http.get(f"http://127.0.0.1:{server.port}/")).text == "ola"
    assert server.connections == 2


async def test_a_large_body_streams_intact_to_a_slow_reader() -> None:
    body = bytes(range(256)) * 16 * 1024  # 4 MiB: past the read buffer's high-water mark
    async with serving(keep_alive(body)) as server, client() as http:
        received = bytearray()
        async with http.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
            async for part in response.aiter_bytes():
                received += part
                await asyncio.sleep(0.001)
        assert bytes(received) == body
        assert (await http.get(f"http://127.0.0.1:{server.port}/")).content == body


async def test_a_large_request_body_is_sent_whole() -> None:
    sent = b"x" * (8 * 1024 * 1024)

    async def echo_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request(reader)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        received = await reader.readexactly(length)
        writer.write(ok(b"%d %d" % (len(received), received.count(b"x"))))
        await writer.drain()
        writer.close()

    async with serving(echo_length) as server, client() as http:
        response = await http.post(f"http://127.0.0.1:{server.port}/", content=sent)
    assert response.text == f"{len(sent)} {len(sent)}"


async def test_https_with_the_servers_ca_and_without_it() -> None:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with serving(keep_alive(b"seguro"), tls=server_tls) as server:
        url = f"https://127.0.0.1:{server.port}/"
        async with client(ssl_context=trusting) as http:
            first, second = await http.get(url), await http.get(url)
            assert (first.text, second.text) == ("seguro", "seguro")
            stream = first.extensions["network_stream"]
            assert stream.get_extra_info("ssl_object").version().startswith("TLS")
        assert server.connections == 1
        async with client() as http:  # the system's CAs do not know this one
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(url)


async def test_connection_refused_is_a_connect_error() -> None:
    async with serving(keep_alive(b"")) as server:
        port = server.port
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with serving(silent) as server, client(timeout=httpx.Timeout(5, read=0.3)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"http://127.0.0.1:{server.port}/")


async def test_a_shorter_read_timeout_holds_on_a_reused_connection() -> None:
    """A connection keeps its read timer between requests: a later request's shorter
    read timeout still times it out on time, not at the earlier request's deadline."""
    async def answers_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"ola"))
        await writer.drain()
        await read_request(reader)  # the second request, on the same connection: silence
        await asyncio.sleep(30)

    async with serving(answers_once) as server, client() as http:
        url = f"http://127.0.0.1:{server.port}/"
        assert (await http.get(url, timeout=httpx.Timeout(30))).text == "ola"
        with pytest.raises(httpx.ReadTimeout):  # within 0.3 s; the guard allows 10x that
            await asyncio.wait_for(http.get(url, timeout=httpx.Timeout(30, read=0.3)), 3)
    assert server.connections == 1


def trickle(parts: int, gap: float, stall_after: int | None = None) -> Handler:
    """A chunked body of ``parts`` pieces ``gap`` seconds apart (silent for good after
    ``stall_after`` of them)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for index in range(parts):
            if index == stall_after:
                await asyncio.sleep(5)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(gap)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    return handler


async def test_the_read_timeout_is_the_gap_between_chunks_not_the_whole_answer() -> None:
    """A model that streams steadily for longer than the read timeout is fine; one that
    goes silent mid-answer for longer than it times out."""
    timeout = httpx.Timeout(5, read=0.3)
    async with serving(trickle(8, 0.1)) as server, client(timeout=timeout) as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/")  # 0.8 s in all
        assert response.text == "x" * 8
    async with serving(trickle(8, 0.05, stall_after=3)) as server, \
            client(timeout=timeout) as http:
        async with http.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
            received = b""
            with pytest.raises(httpx.ReadTimeout):
                async for part in response.aiter_bytes():
                    received += part
        assert received == b"xxx"


async def test_a_body_cut_short_is_a_protocol_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()
        writer.close()

    async with serving(cut) as server, client() as http:
        async with http.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
            with pytest.raises(httpx.RemoteProtocolError):
                await response.aread()


async def test_a_cancelled_request_leaves_no_connection_behind() -> None:
    """A caller that gives up mid-body (a client hung up) closes that connection at
    once: the server sees it go (and would stop generating)."""
    hung_up = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await reader.read()  # until the client closes
        hung_up.set()
        writer.close()

    async with serving(slow) as server, client() as http:
        async def read_all() -> bytes:
            async with http.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
                return await response.aread()

        task = asyncio.ensure_future(read_all())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(hung_up.wait(), 2)


@pytest.mark.parametrize("scenario", [test_https_with_the_servers_ca_and_without_it,
                                      test_a_large_body_streams_intact_to_a_slow_reader,
                                      test_a_connection_the_server_closed_while_idle_is_not_reused,
                                      test_a_cancelled_request_leaves_no_connection_behind],
                         ids=lambda scenario: scenario.__name__.removeprefix("test_"))
def test_on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    """The server runs on uvloop (uvicorn's default), whose transports differ from
    asyncio's own (TLS, flow control): the same scenarios there."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


async def test_chat_maritaca_goes_through_a_proxy_named_in_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours ``HTTP_PROXY`` only on its own transport: ChatMaritaca's clients keep
    it then, and a user behind a proxy still reaches the API through it."""
    from maritaca import ChatMaritaca, aclose_clients
    from maritaca.testing import MaritacaEmulator

    proxied: list[bytes] = []

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A forward proxy for plain HTTP: one request per connection, relayed whole."""
        head = await read_request(reader)
        line, _, rest = head.partition(b"\r\n")
        method, target, version = line.split(b" ")
        proxied.append(target)
        url = httpx.URL(target.decode())
        length = int(next((h.split(b":")[1] for h in rest.split(b"\r\n")
                           if h.lower().startswith(b"content-length:")), b"0"))
        body = await reader.readexactly(length)
        up_reader, up_writer = await asyncio.open_connection(url.host, url.port)
        up_writer.write(b"%s %s %s\r\nconnection: close\r\n%s%s" % (
            method, url.raw_path, version, rest, body))
        await up_writer.drain()
        while part := await up_reader.read(65536):
            writer.write(part)
            await writer.drain()
        up_writer.close()
        writer.close()

    with MaritacaEmulator(reply_tokens=6) as emu:
        endpoint = f"{emu.base_url}/chat/completions".encode()
        async with serving(forward) as proxy:
            for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
                monkeypatch.delenv(name, raising=False)
            monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
            monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
            model = ChatMaritaca(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
            try:
                text = "".join([str(chunk.content) async for chunk in model.astream("oi")])
            finally:
                await aclose_clients()
    assert text and proxied == [endpoint]
