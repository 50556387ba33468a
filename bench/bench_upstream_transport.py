"""What reading an upstream stream costs on httpx's own transport and on
``maritaca.asyncio_http.AsyncioHTTPTransport`` (issue 26), side by side in one process.

Run: ``.venv/bin/python bench/bench_upstream_transport.py [--repeat 5]``

The emulator runs in its own process; this one reads streaming chat completions as the
bare relay does (``upstream_reads``), on eight clients each (ChatMaritaca's layout: each
request takes the client with the fewest in flight), and measures its own CPU time, the
median of ``--repeat`` rounds:

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from report import print_table, run_bench  # noqa: E402
from servers import emulator  # noqa: E402
from upstream_reads import LeastBusy  # noqa: E402

from maritaca.asyncio_http import AsyncioHTTPTransport  # noqa: E402

SHARDS = 8
LIMITS = httpx.Limits(max_connections=250, max_keepalive_connections=64, keepalive_expiry=30)
TRANSPORTS: dict[str, Callable[[], httpx.AsyncClient]] = {
    "httpx (anyio)": lambda: httpx.AsyncClient(timeout=30, limits=LIMITS),
    "maritaca.asyncio_http": lambda: httpx.AsyncClient(
        timeout=30, transport=AsyncioHTTPTransport(limits=LIMITS)),
}


@dataclass(frozen=True)
class Shape:
    """One measurement: the emulator's answers, how many requests at once, and what the
    CPU time is divided by."""

    what: str
    tokens: int
    token_delay: float
    requests: int
    concurrency: int
    per_chunk: bool


SHAPES = [Shape("per request (5 tokens)", 5, 0.0, 400, 50, per_chunk=False),
          Shape("per chunk (200 tokens, 5 ms apart)", 200, 0.005, 100, 50, per_chunk=True)]


async def cpu_per_unit(clients: LeastBusy, base_url: str, api_key: str, shape: Shape,
                       requests: int) -> float:
    """This process's CPU time per request or per chunk (``shape.per_chunk``), in µs."""
    gate = asyncio.Semaphore(shape.concurrency)

    async def one() -> int:
        async with gate:
            return await clients.read_completion(base_url, api_key, shape.tokens)

    start = time.process_time()
    received = await asyncio.gather(*(one() for _ in range(requests)))
    spent = time.process_time() - start
    if min(received) < 1:
        raise RuntimeError("a stream received no text")
    return spent / (sum(received) if shape.per_chunk else requests) * 1e6


async def run(args: argparse.Namespace) -> None:
    rows = []
    for shape in SHAPES:
        with emulator(reply_tokens=shape.tokens, token_delay=shape.token_delay,
                      max_records=5000) as emu:
            figures: dict[str, list[float]] = {name: [] for name in TRANSPORTS}
            pools = {name: LeastBusy([make() for _ in range(SHARDS)])
                     for name, make in TRANSPORTS.items()}
            key = emu.api_key or ""
            for clients in pools.values():  # warm: connections, imports
                await cpu_per_unit(clients, emu.base_url, key, shape, 100)
            for _ in range(args.repeat):
                for name, clients in pools.items():
                    figures[name].append(await cpu_per_unit(
                        clients, emu.base_url, key, shape, shape.requests))
                    emu.reset()
            for clients in pools.values():
                await clients.aclose()
        medians = {name: statistics.median(values) for name, values in figures.items()}
        ours, theirs = medians["maritaca.asyncio_http"], medians["httpx (anyio)"]
        rows.append([shape.what, f"{theirs:.1f}", f"{ours:.1f}", f"{ours / theirs:.2f}x"])
    print(f"\nClient CPU in µs, eight clients of each transport, median of {args.repeat} rounds")
    print_table(["reading", "httpx (anyio)", "maritaca.asyncio_http", "ratio"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args: Any = parser.parse_args()
    run_bench("upstream transport bench", run, args)


if __name__ == "__main__":
    main()
