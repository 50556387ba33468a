"""``ClosingEventStream`` treats a failed write as the client gone, as ASGI servers report
it: since ASGI 2.4, ``send`` on a closed connection raises an ``OSError``. The response
ends quietly (nothing for the error middlewares to log or answer) and closes its body
generator, so the run behind it stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from maritaca_chains.event_stream import ClosingEventStream

SCOPE = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "POST", "path": "/x",
         "headers": []}


async def _never_disconnects() -> dict[str, Any]:
    await asyncio.sleep(30)
    return {"type": "http.disconnect"}


async def test_a_write_to_a_closed_connection_ends_the_stream_quietly() -> None:
    closed = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: ola\n\n"
        finally:
            closed.set()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise ConnectionResetError("the client went away")

    await asyncio.wait_for(ClosingEventStream(body())(SCOPE, _never_disconnects, send), 5)
    assert closed.is_set()


async def test_any_other_failure_still_reaches_the_middlewares() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: ola\n\n"
        raise RuntimeError("the run failed")

    async def send(message: dict[str, Any]) -> None:
        return None

    with pytest.raises(BaseExceptionGroup) as raised:
        await asyncio.wait_for(ClosingEventStream(body())(SCOPE, _never_disconnects, send), 5)
    assert raised.group_contains(RuntimeError, match="the run failed")
