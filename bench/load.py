"""The load client of the server benches: raw asyncio connections that POST a body, read
the SSE answer and count token markers as they arrive. Cheaper per event than any HTTP
library, so the client is never what limits a measurement.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

# Every chain sends a max_tokens budget and the emulator honours it: long benchmark
# streams ask for the most the server allows.
LONG: dict[str, Any] = {"configurable": {"max_tokens": 32_000}}


def chain_body(topic: str = "Brasil", config: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"input": {"topic": topic}}
    if config is not None:
        body["config"] = config
    return json.dumps(body).encode()


def chat_body(prompt: str = "Conte uma história sobre o Brasil.") -> bytes:
    return json.dumps({"model": "sabia-4", "stream": True,
                       "messages": [{"role": "user", "content": prompt}]}).encode()


# What counts as one relayed token on each face.
TOKEN_MARKERS = {
    "stream": b"event: data",                       # LangServe /stream: one per chunk
    "stream_events": b'"on_chat_model_stream"',      # one per model chunk
    "direct": b'"delta":{"content":"',               # the emulator's own SSE
}
END_MARKERS = (b"event: end", b"data: [DONE]")
ERROR_MARKERS = (b"event: error", b'data: {"error"')


class _Counter:
    """Counts a marker in a byte stream that arrives in arbitrary pieces."""

    __slots__ = ("marker", "keep", "tail", "count")

    def __init__(self, marker: bytes) -> None:
        self.marker, self.keep = marker, len(marker) - 1
        self.tail = b""
        self.count = 0

    def feed(self, data: bytes) -> int:
        buf = self.tail + data
        found = buf.count(self.marker)
        self.count += found
        self.tail = buf[-self.keep:] if self.keep else b""
        return found


@dataclass
class StreamResult:
    """What one SSE stream did, as the client saw it (``time.monotonic()`` values)."""

    started: float = 0.0
    status: int = 0
    tokens: int = 0
    first_token: float | None = None
    last_token: float | None = None
    gaps: list[float] = field(default_factory=list)
    gap_at: list[float] = field(default_factory=list)  # when each gap ended
    ended: bool = False
    error: bool = False
    closed_at: float | None = None      # when we hung up (cancellation)
    failure: str | None = None           # connection error, timeout
    body_head: bytes = b""
    events: int = 0                      # SSE events read (``event:`` lines)
    body_bytes: int = 0                  # body bytes read, chunked framing included

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.ended and not self.error and self.failure is None


class SSEStream(asyncio.Protocol):
    """One POST with an SSE answer, over a raw connection: counts token markers and
    records when each arrives. Cheaper per event than any HTTP library, so the client
    stays far from being the bottleneck."""

    def __init__(self, request: bytes, marker: bytes, *, record_gaps: bool = False,
                 hang_up_after: int | None = None) -> None:
        self.request = request
        self.tokens = _Counter(marker)
        self.event_lines = _Counter(b"\nevent: ")  # each follows a chunk size or an event
        self.ends = [_Counter(m) for m in END_MARKERS]
        self.errors = [_Counter(m) for m in ERROR_MARKERS]
        self.record_gaps = record_gaps
        self.hang_up_after = hang_up_after
        self.result = StreamResult(started=time.monotonic())
        self.done: asyncio.Future[StreamResult] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._last: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        res = self.result
        if not res.status:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            line = self._head[:self._head.find(b"\r\n")].split()
            res.status = int(line[1]) if len(line) > 1 and line[1].isdigit() else -1
            data = self._head[end + 4:]
            self._head = b""
            if res.status != 200:
                res.body_head = data[:500]
        if len(res.body_head) < 500 and res.status != 200:
            res.body_head += data[:500 - len(res.body_head)]
        res.body_bytes += len(data)
        res.events += self.event_lines.feed(data)
        new = self.tokens.feed(data)
        if new:
            res.tokens += new
            if res.first_token is None:
                res.first_token = now
            elif self.record_gaps and self._last is not None:
                res.gaps.append(now - self._last)
                res.gaps.extend([0.0] * (new - 1))
                res.gap_at.extend([now] * new)
            self._last = res.last_token = now
        if any(c.feed(data) for c in self.errors):
            res.error = True
        if any(c.feed(data) for c in self.ends):
            res.ended = True
        if self.hang_up_after is not None and res.tokens >= self.hang_up_after \
                and res.closed_at is None:
            res.closed_at = time.monotonic()
            assert self.transport is not None
            self.transport.close()
        elif res.ended or res.error or (res.status not in (0, 200)):
            if res.status != 200 and not (res.ended or res.error):
                return  # read the error body to its end
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.result.failure is None and self.result.closed_at is None:
            self.result.failure = f"{type(exc).__name__}: {exc}"
        if not self.done.done():
            self.done.set_result(self.result)


def http_request(host: str, port: int, path: str, body: bytes,
                 headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
            ).encode() + body


async def sse_stream(url: str, path: str, body: bytes, marker: bytes, *,
                     headers: dict[str, str] | None = None, record_gaps: bool = False,
                     hang_up_after: int | None = None, limit: float = 120.0
                     ) -> StreamResult:
    """POST ``body`` to ``url + path`` and read the SSE answer to its end (or hang up
    after ``hang_up_after`` tokens), giving up after ``limit`` seconds."""
    host, port = _host_port(url)
    loop = asyncio.get_running_loop()
    protocol = SSEStream(http_request(host, port, path, body, headers), marker,
                         record_gaps=record_gaps, hang_up_after=hang_up_after)
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: protocol, host, port), limit)
    except (TimeoutError, OSError) as exc:
        protocol.result.failure = f"connect: {type(exc).__name__}: {exc}"
        return protocol.result
    try:
        return await asyncio.wait_for(asyncio.shield(protocol.done), limit)
    except TimeoutError:
        protocol.result.failure = "timeout"
        transport.abort()
        return protocol.result


def _host_port(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def auth_header(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


