"""What an SSE response costs around its events, side by side in one process (issue 26):
sse-starlette's ``EventSourceResponse`` (a task group of four per response) against ours
for LangServe's routes (``LeanEventSourceResponse``: two plain tasks and a timer), and
Starlette's ``StreamingResponse`` (a task group of two, as our faces' ``ClosingEventStream``
was) against that one now (two plain tasks).

Run: ``.venv/bin/python bench/bench_event_stream.py [--events 7] [--responses 5000]
[--rounds 7] [--loop uvloop|asyncio]``

Each response streams ``--events`` LangServe-shaped events (a metadata event, data
events, the end event) from a generator that yields to the loop between them, as a
model's stream does; the ASGI ``send`` takes the messages and drops them, ``receive``
waits for a hang-up that never comes. All use ``sse_encoding``'s encoder. The figure is this process's CPU time per response, the median of
``--rounds`` rounds, the contenders taking turns within each round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from report import load_average, print_table, run_on  # noqa: E402
from sse_starlette.sse import AppStatus, EventSourceResponse  # noqa: E402
from starlette.responses import StreamingResponse  # noqa: E402

from maritaca_chains.event_stream import ClosingEventStream  # noqa: E402
from maritaca_chains.langserve_compat import sse_encoding  # noqa: E402
from maritaca_chains.langserve_compat.sse_response import LeanEventSourceResponse  # noqa: E402


def _events(count: int) -> Callable[[], AsyncIterator[dict[str, str]]]:
    async def events() -> AsyncIterator[dict[str, str]]:
        yield {"event": "metadata", "data": '{"run_id": "4b46c61c"}'}
        for index in range(count - 2):
            await asyncio.sleep(0)
            yield {"event": "data", "data": f'"palavra {index}"'}
        yield {"event": "end"}

    return events


def contenders(count: int) -> dict[str, Callable[[], Any]]:
    events = _events(count)

    async def encoded() -> AsyncIterator[bytes]:
        async for event in events():
            yield sse_encoding.event_bytes(event, "\r\n")

    return {
        "sse-starlette EventSourceResponse": lambda: EventSourceResponse(events()),
        "ours, LeanEventSourceResponse": lambda: LeanEventSourceResponse(events()),
        "Starlette StreamingResponse": lambda: StreamingResponse(
            encoded(), media_type="text/event-stream"),
        "ours, faces' ClosingEventStream": lambda: ClosingEventStream(encoded()),
    }


async def cpu_per_response(make: Callable[[], Any], responses: int) -> float:
    """µs of this process's CPU per response."""
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}}
    never = asyncio.Event()

    async def receive() -> dict[str, str]:
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        pass

    started = time.process_time()
    for _ in range(responses):
        await make()(scope, receive, send)
    return (time.process_time() - started) / responses * 1e6


async def run(args: argparse.Namespace) -> None:
    sse_encoding.install()
    AppStatus.should_exit_event = None  # bound to this run's loop from its first use
    found = contenders(args.events)
    figures: dict[str, list[float]] = {name: [] for name in found}
    for make in found.values():  # warm
        await cpu_per_response(make, args.responses // 10)
    for round_ in range(args.rounds):
        names = list(found)
        names = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in names:
            figures[name].append(await cpu_per_response(found[name], args.responses))
    base = statistics.median(figures["sse-starlette EventSourceResponse"])
    rows = [[name, f"{statistics.median(values):.1f}",
             f"{statistics.median(values) - base:+.1f}"] for name, values in figures.items()]
    print(f"{load_average()}; loop {args.loop}; {args.events} events a "
          f"response, {args.responses} responses, median of {args.rounds} rounds")
    print_table(["response", "µs CPU / response", "vs EventSourceResponse"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=7)
    parser.add_argument("--responses", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    run_on(args.loop, run(args))


if __name__ == "__main__":
    main()
