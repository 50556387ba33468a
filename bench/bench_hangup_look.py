"""What ``sse_encoding``'s look for a hung-up client costs per request, every event
against every ``CHECK_EVERY`` (16) events, in one process (issue 26).

Run: ``.venv/bin/python bench/bench_hangup_look.py [--tokens 5] [--rounds 9]
[--loop asyncio|uvloop]``

Our app (``create_app``) streams the story chain through httpx's ASGI transport from the
emulator (its own process, no delay), as ``bench_start_layers.py``'s "our app" layers do.
This process's CPU time per request is measured with ``CHECK_EVERY`` at 1 (the look at
every event, as it first shipped) and at its shipped value, the two alternating round by
round (which goes first swaps every round): the median of ``--rounds`` rounds of
``--requests`` requests. ``--loop uvloop`` is what uvicorn picks for ``make serve``;
``asyncio`` is asyncio's own loop (scripts, notebooks).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from bench_start_layers import Layer, cpu_per_request, layers  # noqa: E402
from report import load_average, print_table, run_on  # noqa: E402
from servers import emulator  # noqa: E402

from maritaca_chains.langserve_compat import sse_encoding  # noqa: E402

SHIPPED = sse_encoding.CHECK_EVERY


async def _ab(layer: Layer, emu: Any, args: argparse.Namespace) -> tuple[float, float]:
    """Median ms per request looking at every event, then every ``SHIPPED`` events."""
    figures: dict[int, list[float]] = {1: [], SHIPPED: []}
    try:
        for round_ in range(args.rounds):
            for every in ((1, SHIPPED) if round_ % 2 == 0 else (SHIPPED, 1)):
                sse_encoding.CHECK_EVERY = every
                figures[every].append(await cpu_per_request(layer, args.requests, 50))
                emu.reset()
    finally:
        sse_encoding.CHECK_EVERY = SHIPPED
    return statistics.median(figures[1]), statistics.median(figures[SHIPPED])


async def run(args: argparse.Namespace) -> None:
    rows = []
    with emulator(reply_tokens=args.tokens, token_delay=0.0, max_records=5000) as emu:
        found, (app, _) = layers(emu.base_url, emu.api_key or "")
        async with app.router.lifespan_context(app):
            for face in ("/stream", "/stream_events"):
                layer = found[f"our app {face}"]
                await cpu_per_request(layer, 200, 50)  # warm
                every, shipped = await _ab(layer, emu, args)
                rows.append([face, every, shipped, f"{shipped - every:+.3f}",
                             f"{shipped / every:.3f}x"])
    print(f"\nCPU per request in one process, {args.tokens}-token answers, {args.loop} loop, "
          f"median of {args.rounds} rounds of {args.requests}")
    print_table(["face", "every event ms", f"every {SHIPPED} ms", "diff ms", "ratio"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    print(f"hang-up look bench: {load_average()}")
    run_on(args.loop, run(args))


if __name__ == "__main__":
    main()
