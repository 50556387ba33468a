"""HTTP plumbing for ChatMaritaca: pooled httpx clients, error translation, retry timing.

Clients are shared by every ChatMaritaca with the same connection settings (base URL,
timeout, pool limits): one ``httpx.Client`` per process, ``ASYNC_SHARDS`` ``httpx.
AsyncClient`` per event loop (an async client's connections belong to the loop that
opened them), each request leasing the first one with the fewest requests in flight: a
quiet server keeps using (and keeping alive) the first one's connection, a busy one
spreads its requests evenly. The API key is sent per request, never kept in the pool,
and the clients keep no cookies (``ForgetfulCookieJar``): the pool is every caller's.

Why several async clients: httpcore's pool walks every connection it holds on each
request and each response close (and, for every idle connection, all of them again,
with a ``poll`` of its socket), so a request costs more the larger the pool is, and
quadratically more with idle connections. A server relaying hundreds of streams keeps
hundreds of connections: split over ``ASYNC_SHARDS`` pools, each walk is that many
times shorter (BENCHMARKS.md, issue 26). Their sockets are asyncio protocols rather than
anyio streams (``maritaca.asyncio_http``): a relayed chunk costs 35-41% less to read.
With a proxy named in the environment they keep httpx's own transport, the one that
honours it.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import email.utils
import functools
import http.cookiejar
import json
import math
import random
import ssl
import threading
import time
import urllib.request
import weakref
from collections.abc import Mapping
from typing import Any

import httpx

from . import errors
from .asyncio_http import AsyncioHTTPTransport

__all__ = ["ForgetfulCookieJar", "Lease", "aclose_clients", "async_lease", "backoff_delay",
           "close_clients", "error_from_response", "error_from_transport", "parse_retry_after",
           "sync_client"]

# Enough for hundreds of concurrent streams through one server process.
MAX_CONNECTIONS = 2000
LIMITS = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=200,
                      keepalive_expiry=30)
# The async pools: the same 2000 connections in all, split over the shards. A shard keeps
# idle connections while it holds at most 64 (httpcore closes a returning one when its
# pool holds more connections than that, busy or not): ~500 streams keep theirs.
ASYNC_SHARDS = 8
ASYNC_LIMITS = httpx.Limits(max_connections=MAX_CONNECTIONS // ASYNC_SHARDS,
                            max_keepalive_connections=64, keepalive_expiry=30)


class ForgetfulCookieJar(http.cookiejar.CookieJar):
    """A cookie jar that never learns a cookie from a response.

    Use it for a client that several callers share: a cookie the API, a proxy or a load
    balancer sets in answer to one caller's request would otherwise go out with the
    next caller's, under another API key."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


_NO_COOKIES = "a client several callers share keeps no cookies"


class _SealedCookieJar(ForgetfulCookieJar):
    """A ``ForgetfulCookieJar`` that also refuses a cookie set by hand
    (``client.cookies.set(...)``): it would go out with every caller's requests."""

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        raise AttributeError(_NO_COOKIES)


class _ForgetfulCookies(httpx.Cookies):
    """``httpx.Cookies`` over a ``_SealedCookieJar`` that skips extraction outright:
    httpx wraps every response and its request in urllib adapters (a ``Request`` whose
    URL is parsed again) only to hand them to the jar, which ignores them: 2% of a
    short request's server work (BENCHMARKS.md, issue 26, fourteenth pass). A
    request's own ``cookies=`` still go with that request (httpx copies the client's
    into a jar of their own first)."""

    def __init__(self) -> None:
        super().__init__(_SealedCookieJar())

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Forgetful:
    """For an httpx client several callers share: its ``cookies`` never keep one, and
    cost nothing per response (they cannot be replaced either). Put it before the
    httpx client class."""

    def __init__(self, **kwargs: Any) -> None:
        # httpx's own cookie store forgets too, should a release read it directly
        super().__init__(cookies=ForgetfulCookieJar(), **kwargs)  # type: ignore[call-arg]
        self._forgetful = _ForgetfulCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._forgetful

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise AttributeError(_NO_COOKIES)


class _SharedClient(_Forgetful, httpx.Client):
    pass


class _SharedAsyncClient(_Forgetful, httpx.AsyncClient):
    pass


_lock = threading.Lock()
_sync: dict[tuple[Any, ...], httpx.Client] = {}
_async: dict[tuple[Any, ...], weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shards]] = {}


class _Shards:
    """One event loop's async clients for one configuration, and the requests each has
    in flight."""

    __slots__ = ("busy", "clients")

    def __init__(self, timeout: float | None) -> None:
        proxied = _environment_proxy()
        self.clients = [_async_client(timeout, proxied) for _ in range(ASYNC_SHARDS)]
        self.busy = [0] * ASYNC_SHARDS


def _async_client(timeout: float | None, proxied: bool) -> httpx.AsyncClient:
    """One async client: on ``AsyncioHTTPTransport``, unless the environment names a
    proxy (``proxied``: httpx uses the proxies and ``NO_PROXY`` it finds there only with
    its own transport, so those clients keep it)."""
    if proxied:
        return _SharedAsyncClient(timeout=_timeout(timeout), limits=ASYNC_LIMITS)
    return _SharedAsyncClient(timeout=_timeout(timeout),
                              transport=AsyncioHTTPTransport(limits=ASYNC_LIMITS,
                                                             ssl_context=_tls_context()))


def _environment_proxy() -> bool:
    """Whether ``HTTP(S)_PROXY``/``ALL_PROXY`` (or the system's settings) name a proxy,
    read as httpx reads them."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, built once (it loads the certificate store)."""
    return httpx.create_ssl_context()


class Lease:
    """One request's async client (``client``); ``release()`` it when the request is
    over, its response closed (idempotent)."""

    __slots__ = ("_index", "_shards", "client")

    def __init__(self, shards: _Shards) -> None:
        busy = shards.busy
        index = busy.index(min(busy))  # the fewest in flight; the first of those
        busy[index] += 1
        self._shards: _Shards | None = shards
        self._index = index
        self.client = shards.clients[index]

    def release(self, *_: object) -> None:  # also a task's done callback
        if self._shards is not None:
            self._shards.busy[self._index] -= 1
            self._shards = None


def _timeout(seconds: float | None) -> httpx.Timeout:
    # connect fails fast; read is the gap allowed between two chunks of a stream
    return httpx.Timeout(seconds, connect=min(seconds, 10.0) if seconds else 10.0)


def sync_client(key: tuple[Any, ...], timeout: float | None) -> httpx.Client:
    """The shared sync client for these connection settings."""
    client = _sync.get(key)
    if client is None or client.is_closed:
        with _lock:
            client = _sync.get(key)
            if client is None or client.is_closed:
                client = _sync[key] = _SharedClient(timeout=_timeout(timeout), limits=LIMITS)
    return client


def async_lease(key: tuple[Any, ...], timeout: float | None) -> Lease:
    """A shared async client for these settings on the running event loop, for one
    request: release the lease when the request is over."""
    loop = asyncio.get_running_loop()
    per_loop = _async.get(key)
    if per_loop is None:
        with _lock:
            per_loop = _async.setdefault(key, weakref.WeakKeyDictionary())
    shards = per_loop.get(loop)
    if shards is None or shards.clients[0].is_closed:  # closed by hand: start afresh
        shards = per_loop[loop] = _Shards(timeout)
    return Lease(shards)


def close_clients() -> None:
    """Close every pooled sync client (e.g. at the end of a script or test session)."""
    with _lock:
        clients = list(_sync.values())
        _sync.clear()
    for client in clients:
        client.close()


atexit.register(close_clients)


async def aclose_clients() -> None:
    """Close the pooled async clients of the running loop, and every sync client."""
    loop = asyncio.get_running_loop()
    for per_loop in list(_async.values()):
        shards = per_loop.pop(loop, None)
        if shards is not None:
            for client in shards.clients:
                await client.aclose()
    close_clients()


# ---------------------------------------------------------------------------- errors


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number (float allowed) or an HTTP date; None when it
    is missing or says nothing usable (text, an infinite or NaN number)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # the asctime form and "-0000": HTTP dates are in UTC
            when = when.replace(tzinfo=datetime.UTC)
        delay = when.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError):
        return None
    return max(delay, 0.0)


def _detail(body: bytes) -> str | None:
    """The server's explanation: ``detail`` or ``message`` (or nested ``error``)."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(data, Mapping):
        error = data.get("error")
        inner: Mapping[str, Any] = error if isinstance(error, Mapping) else data
        for key in ("detail", "message", "error"):
            value = inner.get(key)
            if value:
                return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text[:500]


_CONTEXT_WORDS = ("context length", "context window", "maximum context", "too long",
                  "too many tokens", "exceeds the model")


def error_from_response(status: int, headers: Mapping[str, str], body: bytes,
                        *, model: str) -> errors.MaritacaError:
    """The MaritacaError for an HTTP error response."""
    detail = _detail(body)
    if status == 401:
        return errors.AuthenticationError("Maritaca rejected the API key", status=status,
                                          detail=detail)
    if status == 403:
        return errors.PermissionDeniedError(f"The API key may not use model {model!r}",
                                            status=status, detail=detail)
    if status == 429:
        return errors.RateLimitError("Maritaca's rate limit was reached", status=status,
                                     detail=detail,
                                     retry_after=parse_retry_after(headers.get("retry-after")))
    if status >= 500:
        return errors.ServerError("The Maritaca API failed", status=status, detail=detail)
    if status == 404:
        return errors.BadRequestError(f"Not found: model {model!r} or the endpoint",
                                      status=status, detail=detail,
                                      hint="Check the model name and base_url")
    lowered = (detail or "").lower()
    if any(word in lowered for word in _CONTEXT_WORDS):
        return errors.ContextTooLongError(f"The prompt is too long for model {model!r}",
                                          status=status, detail=detail)
    return errors.BadRequestError("Maritaca rejected the request", status=status, detail=detail)


def error_from_transport(exc: httpx.HTTPError, base_url: str) -> errors.MaritacaError:
    """The MaritacaError for an httpx transport failure (no HTTP response)."""
    if isinstance(exc, httpx.TimeoutException):
        return errors.TimeoutError(f"The request to {base_url} timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        return errors.ConnectionError(f"Could not connect to {base_url}", detail=str(exc) or None)
    return errors.StreamError(f"The connection to {base_url} broke off",
                              detail=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def is_retryable(exc: errors.MaritacaError) -> bool:
    return isinstance(exc, (errors.RateLimitError, errors.ServerError, errors.ConnectionError,
                            errors.StreamError))


def backoff_delay(attempt: int, retry_after: float | None = None, *, base: float = 0.5,
                  cap: float = 20.0) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): the server's Retry-After when
    given, else exponential backoff with full jitter."""
    if retry_after is not None:
        return min(retry_after, 60.0)
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
