"""An httpx transport whose sockets are plain asyncio protocols instead of anyio streams.

Use it for an ``httpx.AsyncClient`` that relays many streams, as ChatMaritaca's pooled
clients do::

    client = httpx.AsyncClient(transport=AsyncioHTTPTransport(limits=httpx.Limits()))

The connection pool, HTTP/1.1 and every rule of the request are still httpcore's (its
public ``AsyncConnectionPool`` with a ``network_backend``); only the socket layer
underneath changes, for two costs anyio adds:

- each read opens a cancel scope with a deadline (``anyio.fail_after``) and yields to
  the loop once before it looks at the socket, even when data is waiting;
- before each request, httpcore asks every idle connection in the pool whether its
  socket is readable; anyio answers by building a dict of all the socket's attributes
  and httpcore then ``poll``s the socket. Here the protocol already knows: bytes or an
  end of stream arrived while the connection was idle.

``bench/bench_upstream_transport.py`` measures it against httpx's own transport.

Limits: HTTP/1.1 only (Maritaca's API speaks it). No proxies: httpx reads
``HTTP(S)_PROXY`` from the environment only for a client on its own transport, so a
client given this one connects directly (ChatMaritaca's clients keep httpx's transport
when a proxy is set). Connecting tries a host's addresses one at a time, as uvloop
always does (anyio races IPv6 against IPv4).
"""

# httpcore's backend interface takes ``timeout`` arguments (ASYNC109 would have us drop them).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["AsyncioBackend", "AsyncioHTTPTransport"]

_NEVER = float("inf")
# Past this many unread bytes the socket stops being read until the reader catches up.
_READ_HIGH_WATER = 256 * 1024

# httpcore's errors and the httpx errors an httpx client raises for them.
_HTTPX_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.ProtocolError: httpx.ProtocolError,
}


# What httpcore raises for a failed request (the rest are programming errors).
_CORE_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
                httpcore.ProxyError, httpcore.UnsupportedProtocol)


def _httpx_error(exc: Exception) -> Exception:
    """The httpx error for an httpcore one (the most specific), else ``exc`` itself."""
    for cls in type(exc).__mro__:
        mapped = _HTTPX_ERRORS.get(cls)
        if mapped is not None:
            return mapped(str(exc))
    return exc


def _wake(waiter: asyncio.Future[bool] | None, result: bool = True) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(result)


async def _wait(waiter: asyncio.Future[bool], seconds: float | None) -> bool:
    """Wait for ``waiter``; False when ``seconds`` passed first (a timer, not a task)."""
    if seconds is None:
        return await waiter
    timer = waiter.get_loop().call_later(seconds, _wake, waiter, False)
    try:
        return await waiter
    finally:
        timer.cancel()


class _Connection(asyncio.Protocol):
    """One socket's received bytes and state, kept by the event loop's callbacks."""

    __slots__ = ("buffer", "deadline", "drain_waiter", "ended", "error", "lost", "read_timer",
                 "read_waiter", "reading_paused", "transport", "writing_paused")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # The read timeout: one timer per connection, armed by the first read that waits
        # and moved on only when it fires, rather than a timer made and cancelled per read.
        self.deadline = _NEVER
        self.read_timer: asyncio.TimerHandle | None = None
        self.buffer = bytearray()
        self.ended = False          # the peer sent its end of stream, or the socket closed
        self.lost = False           # the socket closed
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.read_waiter: asyncio.Future[bool] | None = None
        self.drain_waiter: asyncio.Future[bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _READ_HIGH_WATER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        _wake(self.read_waiter)

    def eof_received(self) -> bool:
        self.ended = True
        _wake(self.read_waiter)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = self.lost = True
        self.error = exc
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None
        _wake(self.read_waiter)
        _wake(self.drain_waiter)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self.drain_waiter)

    async def wait_readable(self, timeout: float | None) -> bool:
        """Wait for bytes or the end of the stream; False when ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        self.read_waiter = waiter = loop.create_future()
        try:
            if timeout is None:
                self.deadline = _NEVER
            else:
                self.deadline = deadline = loop.time() + timeout
                timer = self.read_timer  # kept from an earlier read, if not yet fired
                if timer is None or timer.when() > deadline:  # a shorter timeout now
                    if timer is not None:
                        timer.cancel()
                    self.read_timer = loop.call_at(deadline, self._expire)
            return await waiter
        finally:
            self.read_waiter = None

    def _expire(self) -> None:
        """The read timer: time the waiting read out, or wait on until its deadline."""
        self.read_timer = None
        waiter = self.read_waiter
        if waiter is None or waiter.done() or self.deadline == _NEVER:
            return  # nobody waits (the next waiting read arms the timer again)
        loop = waiter.get_loop()
        if loop.time() >= self.deadline:
            waiter.set_result(False)
        else:
            self.read_timer = loop.call_at(self.deadline, self._expire)

    def take(self, max_bytes: int) -> bytes:
        buffer = self.buffer
        if len(buffer) <= max_bytes:
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:max_bytes])
            del buffer[:max_bytes]
        if self.reading_paused and len(buffer) <= _READ_HIGH_WATER // 4 and self.transport:
            self.reading_paused = False
            self.transport.resume_reading()
        return data


# httpcore's names for what it asks a stream -> asyncio's for the same, from its transport
_TRANSPORT_INFO = {"client_addr": "sockname", "server_addr": "peername",
                   "ssl_object": "ssl_object", "socket": "socket"}


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's view of one connection."""

    __slots__ = ("_connection", "_transport")

    def __init__(self, transport: asyncio.Transport, connection: _Connection) -> None:
        self._transport = transport
        self._connection = connection
        connection.transport = transport

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        connection = self._connection
        if not connection.buffer and not connection.ended:
            if not await connection.wait_readable(timeout):
                raise httpcore.ReadTimeout(f"no data for {timeout} s")
        if connection.buffer:
            return connection.take(max_bytes)
        if connection.error is not None:
            raise httpcore.ReadError(str(connection.error) or type(connection.error).__name__)
        return b""  # the peer closed the connection: h11 decides whether that was early

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        connection = self._connection
        if connection.lost or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        if connection.writing_paused:
            connection.drain_waiter = waiter = asyncio.get_running_loop().create_future()
            try:
                if not await _wait(waiter, timeout):
                    raise httpcore.WriteTimeout(f"could not send for {timeout} s")
            finally:
                connection.drain_waiter = None
            if connection.lost:
                raise httpcore.WriteError("the connection closed while sending")

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(self._transport, self._connection,
                                                 ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            self._transport.abort()
            raise httpcore.ConnectTimeout(f"TLS handshake took over {timeout} s") from exc
        except OSError as exc:  # ssl.SSLError included
            self._transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
        if transport is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        return _Stream(transport, self._connection)  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # asked of idle connections: anything means "expired"
            return self._connection.ended or bool(self._connection.buffer)
        name = _TRANSPORT_INFO.get(info)
        return None if name is None else self._transport.get_extra_info(name)


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on asyncio protocols (see the module docstring)."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                # The addresses one at a time (as uvloop always does): asyncio's "happy
                # eyeballs" race leaks the winning socket when the request is cancelled.
                transport, connection = await loop.create_connection(
                    _Connection, host, port, local_addr=local)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"could not connect to {host}:{port} "
                                          f"in {timeout} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self._configured(transport, connection, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_unix_connection(_Connection, path)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"could not connect to {path} in {timeout} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return self._configured(transport, connection, socket_options)

    @staticmethod
    def _configured(transport: asyncio.BaseTransport, connection: _Connection,
                    socket_options: Iterable[Any] | None) -> _Stream:
        if socket_options:
            sock = transport.get_extra_info("socket")
            for option in socket_options:
                sock.setsockopt(*option)
        return _Stream(transport, connection)  # type: ignore[arg-type]

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _ResponseBody(httpx.AsyncByteStream):
    """An httpcore response body as httpx reads it, its errors as httpx's."""

    __slots__ = ("_body",)

    def __init__(self, body: Any) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._body:
                yield part
        except _CORE_ERRORS as exc:
            raise _httpx_error(exc) from exc

    async def aclose(self) -> None:
        close = getattr(self._body, "aclose", None)
        if close is not None:
            try:
                await close()
            except _CORE_ERRORS as exc:
                raise _httpx_error(exc) from exc


class AsyncioHTTPTransport(httpx.AsyncBaseTransport):
    """httpx's HTTP/1.1 transport, with httpcore's pool on ``AsyncioBackend``.

    Takes the options ChatMaritaca's clients use: pool ``limits`` and the TLS context
    (by default httpx's, ``httpx.create_ssl_context()``; share one between transports:
    building one loads the certificate store).
    """

    def __init__(self, *, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None,
                 ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port,
                             target=url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        try:
            response = await self._pool.handle_async_request(core_request)
        except _CORE_ERRORS as exc:
            raise _httpx_error(exc) from exc
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_ResponseBody(response.stream),
                              extensions=response.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()
