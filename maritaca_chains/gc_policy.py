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

    Use it around a streaming server's lifetime (the app's lifespan does). A full
    collection stops every stream for as long as it walks the long-lived objects; with
    hundreds of slow streams, collections triggered by allocation come often enough to
    push chunk gaps over budget. Young generations still collect as usual; the cycles
    that outlive them (LangServe's cancellation paths leave some) wait for the timer,
    which costs memory, never a socket: nothing here relies on the collector to close
    one (``tests/test_fault_load.py`` runs the server with the collector off).
    Start-up objects are frozen out of every walk. ``seconds`` <= 0 keeps Python's own
    policy.
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
