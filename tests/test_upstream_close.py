"""The upstream response a consumer leaves unread is closed, and its connection given
back to the pool, however the reader is stopped."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from maritaca._upstream import UpstreamStream, open_upstreams
from maritaca.asyncio_http import AsyncioHTTPTransport
from maritaca.testing import MaritacaEmulator


def _error(response: httpx.Response, body: bytes) -> Exception:
    return RuntimeError(f"{response.status_code}: {body[:200]!r}")


@pytest.mark.parametrize("transport", ["ours", "httpx"])
async def test_a_long_answer_left_unread_gives_its_connection_back(transport: str) -> None:
    """A slow consumer takes one block of a long, fast answer (the reader then waits
    with its queue full, the body unread) and leaves, twice, on a client of one
    connection: the next request on that client still gets the connection."""
    limits = httpx.Limits(max_connections=1)
    client = httpx.AsyncClient(
        limits=limits, timeout=5,
        transport=AsyncioHTTPTransport(limits=limits) if transport == "ours" else None)
    with MaritacaEmulator(reply_tokens=3000) as emu:
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        body = json.dumps({"model": "sabia-4", "stream": True,
                           "messages": [{"role": "user", "content": "Conte uma história"}]})
        async with client:
            for _ in range(2):
                request = client.build_request("POST", f"{emu.base_url}/chat/completions",
                                               content=body, headers=headers)
                stream = UpstreamStream(client, request, _error)
                assert await stream.next_block()
                await asyncio.sleep(0.2)  # the reader fills its queue and waits
                stream.close()
                await asyncio.sleep(0.2)
            assert open_upstreams() == 0
            response = await asyncio.wait_for(
                client.get(f"{emu.base_url}/models", headers=headers), 3)
            assert response.status_code == 200
