"""When the cyclic garbage collector runs its full collections, for a streaming server."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["full_collections_on_a_timer"]


@asynccontextmanager
async def full_collections_on_a_timer(seconds: float) -> AsyncIterator[None]:
    """Run the cyclic GC's full collections every ``seconds`` instead of by allocation count.

    A full collection stops every stream for as long as it walks the long-lived objects;
    with hundreds of slow streams those pauses push chunk gaps over budget. Young
    generations still collect as usual; the few cycles that outlive them wait for the
    timer. Start-up objects are frozen out of every walk. ``seconds`` <= 0 keeps
    Python's own policy.
    """
    gc.freeze()  # start-up objects live forever: keep them out of the collector's walk
    if seconds <= 0:
        yield
        return
    before = gc.get_threshold()
    gc.set_threshold(before[0], before[1], 1_000_000)  # no full collection by count

    async def collect() -> None:
        while True:
            await asyncio.sleep(seconds)
            gc.collect()

    timer = asyncio.create_task(collect())
    try:
        yield
    finally:
        timer.cancel()
        gc.set_threshold(*before)
