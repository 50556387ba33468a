"""What the drain's bookkeeping costs per relayed chunk: LifecycleMiddleware vs none.

Run: ``.venv/bin/python bench/bench_lifecycle.py [--chunks 100000] [--repeat 5]``

Every HTTP response passes through ``maritaca_chains.lifecycle.LifecycleMiddleware``
(it notes whether the response started and ended, so the drain can end a stream with a
named error). This times that per-chunk work in isolation: an ASGI app sending
``--chunks`` SSE body chunks, called bare and through the middleware, this process's CPU
time, best of ``--repeat``. Compare with the server's whole cost per relayed chunk
(BENCHMARKS.md: tens of microseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from maritaca_chains.lifecycle import Drain, LifecycleMiddleware


class _AlwaysReady:
    async def why_not(self) -> str | None:
        return None


def _streaming_app(chunks: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        message = {"type": "http.response.body", "body": b"data: x\r\n\r\n", "more_body": True}
        for _ in range(chunks):
            await send(message)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def _discard(message: Any) -> None:
    return None


async def _disconnect() -> dict[str, str]:
    return {"type": "http.disconnect"}


async def _cpu_per_chunk(app: Any, chunks: int, repeat: int) -> float:
    scope = {"type": "http", "path": "/story/stream", "method": "POST"}
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        await app(scope, _disconnect, _discard)
        best = min(best, time.process_time() - started)
    return best / chunks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bare = _streaming_app(args.chunks)
    wrapped = LifecycleMiddleware(bare, drain=Drain(30), readiness=_AlwaysReady())  # type: ignore[arg-type]
    without = asyncio.run(_cpu_per_chunk(bare, args.chunks, args.repeat))
    with_it = asyncio.run(_cpu_per_chunk(wrapped, args.chunks, args.repeat))
    print(f"bare app:             {without:.3f} µs/chunk")
    print(f"through the lifecycle: {with_it:.3f} µs/chunk (+{with_it - without:.3f} µs)")


if __name__ == "__main__":
    main()
