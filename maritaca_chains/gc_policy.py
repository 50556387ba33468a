"""When the cyclic garbage collector runs its full collections, for a streaming server."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["full_collections_on_a_timer"]

# The collector is the process's, not a server's: several apps may run in one process (tests,
# an app mounted in another), their lifespans overlapping. The first to start saves what it
# changes, the last to stop puts it back.
_lock = threading.Lock()
_servers = 0  # inside the context
_timed = 0  # of those, with full collections on a timer
_saved_threshold = 0  # the third threshold before the first timed server started
_unfreeze = False  # whether the first server froze a process nobody had frozen


@asynccontextmanager
async def full_collections_on_a_timer(seconds: float) -> AsyncIterator[None]:
    """Run the cyclic GC's full collections every ``seconds`` instead of by allocation count.

    Use it around a streaming server's lifetime (the app's lifespan does). A full
    collection stops every stream for as long as it walks the long-lived objects; with
    hundreds of slow streams, collections triggered by allocation come often enough to
    push chunk gaps over budget (BENCHMARKS.md: pinned to one core, p99 chunk gap 66 ms
    with the timer against 142 ms with Python's policy at 50 streams). Young generations
    still collect as usual; the cycles that outlive them (LangServe's cancellation paths
    leave some) wait for the timer, which costs memory, never a socket: nothing here
    relies on the collector to close one (``tests/test_fault_load.py`` runs the server
    with the collector off). ``seconds`` <= 0 keeps Python's own thresholds.

    Either way, the objects alive at start-up (modules, chains, the app) are frozen out
    of every full collection's walk (``gc.freeze``): they live as long as the server.
    When the last server in the process stops, the collector is as it found it: its
    threshold back, and unfrozen unless someone else had frozen it first.
    """
    global _servers, _timed, _saved_threshold, _unfreeze
    timed = seconds > 0
    with _lock:
        if _servers == 0:
            _unfreeze = gc.get_freeze_count() == 0
        _servers += 1
        gc.freeze()  # start-up objects live forever: keep them out of the collector's walk
        if timed:
            if _timed == 0:
                first, second, _saved_threshold = gc.get_threshold()
                gc.set_threshold(first, second, 1_000_000)  # no full collection by count
            _timed += 1
    timer = asyncio.create_task(_collect_every(seconds)) if timed else None
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
        with _lock:
            if timed:
                _timed -= 1
                if _timed == 0:
                    first, second, _ = gc.get_threshold()
                    gc.set_threshold(first, second, _saved_threshold)
            _servers -= 1
            if _servers == 0 and _unfreeze:
                gc.unfreeze()


async def _collect_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        gc.collect()
