"""Reading the emulator's streaming chat completions with httpx, as the bare relay does
(``aiter_lines`` + ``orjson`` per line): the raw upstream layer of the in-process benches
(``bench_start_layers.py``, ``bench_upstream_transport.py``)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

MESSAGES = [{"role": "system", "content": "Conte uma história original."},
            {"role": "user", "content": "Tema: Brasil"}]


async def read_completion(http: httpx.AsyncClient, base_url: str, api_key: str,
                          max_tokens: int = 300) -> int:
    """One streaming chat completion read to its end; how many text chunks it had."""
    body: dict[str, Any] = {"model": "sabia-4", "messages": MESSAGES, "max_tokens": max_tokens,
                            "stream": True, "stream_options": {"include_usage": True}}
    chunks = 0
    async with http.stream("POST", f"{base_url}/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {api_key}"}) as upstream:
        async for line in upstream.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choices = orjson.loads(line[6:]).get("choices")
                chunks += bool(choices and choices[0]["delta"].get("content"))
    return chunks


class LeastBusy:
    """Several clients, each request on the one with the fewest in flight (the first of
    those), as ChatMaritaca pools its connections."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self.clients = clients
        self.in_flight = [0] * len(clients)

    async def read_completion(self, base_url: str, api_key: str, max_tokens: int = 300) -> int:
        shard = self.in_flight.index(min(self.in_flight))
        self.in_flight[shard] += 1
        try:
            return await read_completion(self.clients[shard], base_url, api_key, max_tokens)
        finally:
            self.in_flight[shard] -= 1

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
