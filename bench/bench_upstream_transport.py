"""What reading an upstream stream costs on httpx's own transport and on
``maritaca.asyncio_http.AsyncioHTTPTransport`` (issue 26), side by side in one process.

Run: ``.venv/bin/python bench/bench_upstream_transport.py [--repeat 5]``

The emulator runs in its own process; this one reads streaming chat completions as the
bare relay does (``aiter_lines`` + ``orjson`` per line), on eight clients each
(ChatMaritaca's layout: each request takes the client with the fewest in flight), and
measures its own CPU time, the median of ``--repeat`` rounds:

- per request: 400 requests for a 5-token answer, 50 at a time (the start of a stream:
  connection assignment in the pool, request and response headers);
- per chunk: 100 streams of 200 tokens, 5 ms apart, 50 at a time (a relayed token).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from report import print_table, run_bench  # noqa: E402
from servers import emulator  # noqa: E402

from maritaca.asyncio_http import AsyncioHTTPTransport  # noqa: E402

SHARDS = 8
LIMITS = httpx.Limits(max_connections=250, max_keepalive_connections=64, keepalive_expiry=30)
TRANSPORTS: dict[str, Callable[[], httpx.AsyncClient]] = {
    "httpx (anyio)": lambda: httpx.AsyncClient(timeout=30, limits=LIMITS),
    "maritaca.asyncio_http": lambda: httpx.AsyncClient(
        timeout=30, transport=AsyncioHTTPTransport(limits=LIMITS)),
}


async def cpu_per_unit(clients: list[httpx.AsyncClient], base_url: str, api_key: str,
                       requests: int, concurrency: int, tokens: int) -> float:
    """This process's CPU time per request (``tokens`` 5) or per chunk, in µs."""
    in_flight = [0] * len(clients)
    gate = asyncio.Semaphore(concurrency)
    body = {"model": "sabia-4", "messages": [{"role": "user", "content": "Tema: Brasil"}],
            "max_tokens": tokens, "stream": True}
    headers = {"Authorization": f"Bearer {api_key}"}

    async def one() -> int:
        async with gate:
            shard = in_flight.index(min(in_flight))
            in_flight[shard] += 1
            chunks = 0
            try:
                async with clients[shard].stream("POST", f"{base_url}/chat/completions",
                                                 json=body, headers=headers) as upstream:
                    async for line in upstream.aiter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            choices = orjson.loads(line[6:]).get("choices")
                            chunks += bool(choices and choices[0]["delta"].get("content"))
            finally:
                in_flight[shard] -= 1
            return chunks

    start = time.process_time()
    received = await asyncio.gather(*(one() for _ in range(requests)))
    spent = time.process_time() - start
    if min(received) < 1:
        raise RuntimeError("a stream received no text")
    return spent / (requests if tokens <= 5 else sum(received)) * 1e6


async def run(args: argparse.Namespace) -> None:
    # (what, emulator's answer length and token gap, requests, concurrency)
    shapes = [("per request (5 tokens)", 5, 0.0, 400, 50),
              ("per chunk (200 tokens, 5 ms apart)", 200, 0.005, 100, 50)]
    rows = []
    for what, tokens, delay, requests, concurrency in shapes:
        with emulator(reply_tokens=tokens, token_delay=delay, max_records=5000) as emu:
            figures: dict[str, list[float]] = {name: [] for name in TRANSPORTS}
            pools = {name: [make() for _ in range(SHARDS)] for name, make in TRANSPORTS.items()}
            key = emu.api_key or ""
            for clients in pools.values():  # warm: connections, imports
                await cpu_per_unit(clients, emu.base_url, key, 100, concurrency, tokens)
            for _ in range(args.repeat):
                for name, clients in pools.items():
                    figures[name].append(await cpu_per_unit(
                        clients, emu.base_url, key, requests, concurrency, tokens))
                    emu.reset()
            for clients in pools.values():
                for client in clients:
                    await client.aclose()
        medians = {name: statistics.median(values) for name, values in figures.items()}
        ours, theirs = medians["maritaca.asyncio_http"], medians["httpx (anyio)"]
        rows.append([what, f"{theirs:.1f}", f"{ours:.1f}", f"{ours / theirs:.2f}x"])
    print(f"\nClient CPU in µs, eight clients of each transport, median of {args.repeat} rounds")
    print_table(["reading", "httpx (anyio)", "maritaca.asyncio_http", "ratio"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args: Any = parser.parse_args()
    run_bench("upstream transport bench", run, args)


if __name__ == "__main__":
    main()
