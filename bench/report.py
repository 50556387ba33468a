"""How a bench starts and what it prints: the machine's state, then aligned tables."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any


def raise_nofile() -> int:
    """Raise this process's open-file soft limit to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_on(loop: str, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on ``loop``: "uvloop" (what uvicorn picks) or "asyncio" (asyncio's own)."""
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def install_uvloop() -> str:
    """Use uvloop for this process's asyncio loops when it is installed."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def run_bench(title: str, run: Callable[[Any], Coroutine[Any, Any, None]], args: Any) -> None:
    """The server benches' common start and end: raise the open-file limit, put the load
    client on uvloop, print the machine's load, run ``run(args)`` and its duration."""
    nofile = raise_nofile()
    loop_name = install_uvloop()
    print(f"{title}: {load_average()}; open-file limit {nofile}; client loop {loop_name}")
    started = time.monotonic()
    asyncio.run(run(args))
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
