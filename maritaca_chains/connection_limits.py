"""Bounded request heads for uvicorn: a size limit (431) and a time limit to send one.

uvicorn's httptools protocol, which ``maritaca-chains serve`` uses, has neither: a
100 MB header is buffered whole (httptools joins its pieces, at quadratic cost) and a
connection that sends nothing, or a byte now and then, stays open for ever. An ASGI
middleware cannot help: the app is called only once the head is complete. This module
is the one place that subclasses uvicorn's protocol (a test drives it with real
sockets, so an uvicorn change that breaks it fails there):

- a head (request line and headers) over ``max_head_bytes`` gets ``431 Request Header
  Fields Too Large`` and the connection closes; bytes are counted as they arrive, so
  at most one read (64 KiB) past the limit is ever held;
- a connection that has not sent a complete head ``head_timeout`` seconds after it
  opened, or after its previous response, is closed (uvicorn's keep-alive timer only
  covers a connection that sends nothing at all after a response).

``serve`` passes the class to uvicorn as ``http=``; for ``uvicorn`` on the command line
use ``--http maritaca_chains.connection_limits:BoundedHttpToolsProtocol`` (the limits
then come from the environment: ``MARITACA_CHAINS_MAX_HEADER_BYTES`` and
``MARITACA_CHAINS_HEADER_TIMEOUT_SECONDS``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from functools import cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .messages import say
from .metrics import request_refused

__all__ = ["BoundedHttpToolsProtocol", "bounded_http_protocol"]

logger = logging.getLogger("maritaca_chains.server")

_431 = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\nconnection: close\r\n")


@cache
def _limits_from_settings() -> tuple[int, float]:
    from .settings import ServerSettings

    settings = ServerSettings()
    return settings.max_header_bytes, settings.header_timeout_seconds


class _HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing a head over the limit."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size limit and a head timeout. The
    class attributes (None: from the settings) are set by :func:`bounded_http_protocol`."""

    max_head_bytes: int | None = None
    head_timeout: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.max_head_bytes is None or self.head_timeout is None:
            self.max_head_bytes, self.head_timeout = _limits_from_settings()
        self._in_head = True      # the next bytes belong to a request head
        self._read_bytes = 0      # bytes read while in a head (bounds what is buffered)
        self._last_read = 0       # size of the read being parsed
        self._message_done = False
        self._too_large = False
        # when the head now awaited was due to start (None: none awaited); one timer per
        # connection checks it, re-armed only when it fires (not a timer per request)
        self._head_since: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ the time limit

    def _await_head(self) -> None:
        self._head_since = self.loop.time()
        if self._head_timer is None:
            assert self.head_timeout is not None
            self._head_timer = self.loop.call_later(self.head_timeout, self._check_head)

    def _check_head(self) -> None:
        self._head_timer = None
        if self._head_since is None or self.transport.is_closing():
            return
        assert self.head_timeout is not None
        late = self.loop.time() - self._head_since
        if late < self.head_timeout:  # a later head: check again when it is due
            self._head_timer = self.loop.call_later(self.head_timeout - late, self._check_head)
            return
        logger.info("closed a connection from %s: no complete request head within %g s",
                    self.client[0] if self.client else "?", self.head_timeout)
        request_refused("head_timeout")
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_since = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _request_done(self) -> None:
        """The request was read and answered: the client owes the next head in time."""
        if not self.transport.is_closing() and not self.pipeline:
            self._await_head()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._read_bytes, self._message_done = True, 0, True
        if self.cycle is not None and self.cycle.response_complete:
            self._request_done()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._message_done:
            self._request_done()

    # ------------------------------------------------------------ the size limit

    def data_received(self, data: bytes) -> None:
        counting = self._in_head
        self._last_read = len(data)
        super().data_received(data)
        if self._too_large or self.transport.is_closing():
            return
        if counting and self._in_head and not self._message_done:  # a head still open
            self._read_bytes += len(data)
            assert self.max_head_bytes is not None
            if self._read_bytes > self.max_head_bytes:
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._message_done = True, False

    def on_headers_complete(self) -> None:
        assert self.max_head_bytes is not None
        # the reads may also carry a body: count the head itself only when they were
        # big enough for it to be over the limit (a normal request never pays for it)
        if self._read_bytes + self._last_read > self.max_head_bytes and \
                len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers) \
                + 16 > self.max_head_bytes:
            self._too_large = True
            raise _HeadTooLarge  # httptools stops; uvicorn calls send_400_response
        self._in_head, self._read_bytes, self._head_since = False, 0, None
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse_head()
            return
        super().send_400_response(msg)

    def _refuse_head(self) -> None:
        self._too_large, self._head_since = True, None
        request_refused("head_too_large")
        # the head is not read to its end, so not its Accept-Language either: pt-BR
        body = json.dumps({"detail": say("head_too_large", limit=self.max_head_bytes),
                           "type": "head_too_large"}, ensure_ascii=False).encode()
        self.transport.write(_431 + b"content-length: " + str(len(body)).encode()
                             + b"\r\n\r\n" + body)
        self.transport.close()


def bounded_http_protocol(max_head_bytes: int, head_timeout: float
                          ) -> type[BoundedHttpToolsProtocol]:
    """The protocol class with these limits, for ``uvicorn.Config(http=...)``."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,),
                {"max_head_bytes": max_head_bytes, "head_timeout": head_timeout,
                 "__module__": __name__})
