"""ChatMaritaca's one HTTP transport: send a chat completions call, retry, map errors.

All four call shapes go through ``Transport``: ``post``/``apost`` (one JSON answer) and
``stream``/``astream`` (SSE events fed to a fresh ``StreamAssembler`` per attempt,
chunks out). The rules, in one place:

- Retries (429 honouring ``Retry-After`` up to ``MAX_RETRY_WAIT``, 5xx, network
  failures, a stream that broke off) happen only before the first chunk was yielded:
  after that the caller holds text a retry would repeat.
- Every failure surfaces as a ``maritaca.errors`` class, raised ``from`` the httpx or
  JSON error behind it.
- A stream that ends without a finish_reason is a ``StreamError``, not a short answer.
- The async stream reads the response in its own task (``UpstreamStream``), so a
  hang-up closes the upstream at once.

The per-chunk loops are kept flat (locals bound once, no extra generator layer):
they run for every token of every stream.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import orjson
from langchain_core.outputs import ChatGenerationChunk

from . import _http, errors
from ._sse import SSEDecoder
from ._upstream import UpstreamStream
from ._wire import StreamAssembler

__all__ = ["MAX_RETRY_WAIT", "Transport"]

MAX_RETRY_WAIT = 60.0  # a Retry-After longer than this is handed to the caller instead
_DONE = b"[DONE]"
_FAILURES = (httpx.HTTPError, errors.MaritacaError, orjson.JSONDecodeError)

OnToken = Callable[..., Any]  # run_manager.on_llm_new_token(text, chunk=chunk)


@functools.lru_cache(maxsize=64)
def _completions_url(base_url: str) -> httpx.URL:
    """The endpoint under ``base_url``, parsed once (httpx parses a ``str`` URL again
    for every request, in Python; a ``URL`` it only copies)."""
    return httpx.URL(f"{base_url}/chat/completions")


class Transport:
    """One call's destination and policy: ``url``/``headers`` (key included), the
    ``base_url`` and ``model`` that error messages name, the pooled client's ``timeout``
    and the number of ``max_retries``. Cheap: build one per call."""

    __slots__ = ("base_url", "headers", "max_retries", "model", "timeout", "url")

    def __init__(self, base_url: str, headers: dict[str, str], *, model: str,
                 timeout: float | None, max_retries: int) -> None:
        self.base_url = base_url
        self.url = _completions_url(base_url)
        self.headers = headers
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries

    # ------------------------------------------------------------------------ policy
    def _pool_key(self) -> tuple[Any, ...]:
        return (self.timeout,)

    def _error_for(self, response: httpx.Response, body: bytes) -> errors.MaritacaError:
        return _http.error_from_response(response.status_code, response.headers, body,
                                         model=self.model)

    def _wait_or_raise(self, exc: Exception, attempt: int, yielded: int) -> float:
        """Seconds to wait before the next attempt; raises the mapped error instead when
        ``exc`` is final (not retryable, retries used up, or chunks already yielded)."""
        error = _as_maritaca_error(exc, self.base_url, yielded)
        if not yielded and attempt <= self.max_retries and _http.is_retryable(error):
            retry_after = getattr(error, "retry_after", None)
            if retry_after is None or retry_after <= MAX_RETRY_WAIT:
                return _http.backoff_delay(attempt, retry_after)
        raise error from (exc if error is not exc else None)

    def _result(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise self._error_for(response, response.content)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise errors.ServerError("The API answered with a body that is not JSON",
                                     status=response.status_code,
                                     detail=response.text[:200]) from exc

    def _complete(self, assembler: StreamAssembler) -> ChatGenerationChunk:
        if not assembler.finished:
            raise errors.StreamError(
                f"The stream from {self.base_url} ended before the model finished "
                f"({assembler.yielded} chunks received, no finish_reason)",
                chunks_received=assembler.yielded)
        return assembler.last_chunk()

    # ------------------------------------------------------------------ one answer
    def post(self, body: bytes) -> Any:
        """POST ``body`` and return the parsed JSON answer."""
        client = _http.sync_client(self._pool_key(), self.timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._result(client.post(self.url, content=body, headers=self.headers))
            except _FAILURES as exc:
                time.sleep(self._wait_or_raise(exc, attempt, 0))

    async def apost(self, body: bytes) -> Any:
        """``post`` for async callers."""
        attempt = 0
        while True:
            attempt += 1
            lease = _http.async_lease(self._pool_key(), self.timeout)
            try:
                return self._result(
                    await lease.client.post(self.url, content=body, headers=self.headers))
            except _FAILURES as exc:
                lease.release()
                await asyncio.sleep(self._wait_or_raise(exc, attempt, 0))
            finally:
                lease.release()

    # ---------------------------------------------------------------------- streams
    # stream and astream are deliberate sync/async twins (as post and apost are): the
    # same retry loop and per-chunk loop; a change to one is a change to both.
    def stream(self, body: bytes, new_assembler: Callable[[], StreamAssembler],
               on_token: OnToken | None = None) -> Iterator[ChatGenerationChunk]:
        """POST ``body`` (a streaming request) and yield its chunks, the assembler's
        closing chunk last. ``on_token(text, chunk=chunk)`` sees each chunk but the last."""
        client = _http.sync_client(self._pool_key(), self.timeout)
        attempt = 0
        while True:
            attempt += 1
            assembler = new_assembler()
            try:
                with client.stream("POST", self.url, content=body,
                                   headers=self.headers) as response:
                    if response.status_code >= 400:
                        raise self._error_for(response, response.read())
                    decoder = SSEDecoder()
                    loads, feed = orjson.loads, assembler.feed
                    done = False
                    for raw in response.iter_bytes():
                        for data in decoder.feed(raw):
                            if data == _DONE:
                                done = True
                                break
                            chunk = feed(loads(data))
                            if chunk is not None:
                                if on_token is not None:
                                    on_token(chunk.text, chunk=chunk)
                                yield chunk
                        if done:
                            break
                    last = self._complete(assembler)
                yield last
                return
            except _FAILURES as exc:
                time.sleep(self._wait_or_raise(exc, attempt, assembler.yielded))

    async def astream(self, body: bytes, new_assembler: Callable[[], StreamAssembler],
                      on_token: Callable[..., Awaitable[Any]] | None = None,
                      ) -> AsyncIterator[ChatGenerationChunk]:
        """``stream`` for async callers; the response is read in its own task."""
        attempt = 0
        while True:
            attempt += 1
            assembler = new_assembler()
            try:
                lease = _http.async_lease(self._pool_key(), self.timeout)
                try:
                    request = lease.client.build_request("POST", self.url, content=body,
                                                         headers=self.headers)
                except BaseException:
                    lease.release()
                    raise
                # the reader's end releases the lease: the response is closed by then
                upstream = UpstreamStream(lease.client, request, self._error_for,
                                          on_end=lease.release)
                try:
                    decoder = SSEDecoder()
                    loads, feed, next_block = orjson.loads, assembler.feed, upstream.next_block
                    done = False
                    while (raw := await next_block()) is not None:
                        for data in decoder.feed(raw):
                            if data == _DONE:
                                done = True
                                break
                            chunk = feed(loads(data))
                            if chunk is not None:
                                if on_token is not None:
                                    await on_token(chunk.text, chunk=chunk)
                                yield chunk
                        if done:
                            break
                    last = self._complete(assembler)
                finally:
                    upstream.close()
                yield last
                return
            except _FAILURES as exc:
                await asyncio.sleep(self._wait_or_raise(exc, attempt, assembler.yielded))


def _as_maritaca_error(exc: Exception, base_url: str, yielded: int) -> errors.MaritacaError:
    """The one translation of lower-library failures into ``maritaca.errors``."""
    if isinstance(exc, errors.MaritacaError):
        return exc
    if isinstance(exc, httpx.HTTPError):
        error = _http.error_from_transport(exc, base_url)
        if isinstance(error, errors.StreamError):
            error.chunks_received = yielded
        return error
    return errors.StreamError("The API sent an event that is not valid JSON",
                              detail=str(exc)[:200], chunks_received=yielded)
