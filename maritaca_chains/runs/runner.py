"""Runs chains in the background, writing their events to a store; cancels them on
``DELETE`` (from any replica) and when nobody has read them for the grace period.

Use one ``RunManager`` per app: ``await manager.start(...)`` launches a run, ``await
manager.cancel(run_id)`` stops it, ``async with manager:`` (the app's lifespan) stops
every run of this process at shutdown.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

from langchain_core.runnables import Runnable, RunnableConfig
from langserve.serialization import WellKnownLCSerializer

from maritaca import closing_upstreams

from ..error_responses import sse_error_data
from ..ledger import Ledger
from .events import RunInfo, RunStatus, run_error_data, sse_block
from .store import RunStore

__all__ = ["RunManager"]

logger = logging.getLogger("maritaca_chains.runs")

_serializer = WellKnownLCSerializer()  # LangServe's, so data events match /stream's


class RunManager:
    """Starts runs on ``store``, and cancels a run with no reader for ``grace`` seconds."""

    def __init__(self, store: RunStore, *, grace: float) -> None:
        self.store, self.grace = store, grace
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._why: dict[str, str] = {}
        self._opened: asyncio.Task[None] | None = None

    async def ensure_open(self) -> None:
        """Open the store once (lazily: in-process test clients run no lifespan)."""
        if self._opened is None:
            self._opened = asyncio.create_task(self.store.open())
            self.store.on_cancel(self._cancel_here)
        await asyncio.shield(self._opened)

    async def __aenter__(self) -> RunManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel this process's runs (their readers get a ``cancelled`` error event)."""
        tasks = list(self._tasks.values())
        for run_id in self._tasks:
            self._why[run_id] = "the server is shutting down"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._opened is not None:
            await self.store.aclose()

    async def start(self, info: RunInfo, chain: Runnable[Any, Any], value: Any,
                    config: RunnableConfig, ledger: Ledger) -> None:
        """Record the run (``RunsFull`` if there is no room) and start it; ``ledger``
        (from the request that starts it) logs, counts and charges it, and gives its
        status its ``usage``."""
        await self.ensure_open()
        await self.store.create(info)
        # a fresh context: the run must not inherit the request's upstream scope, which
        # closes what it opened when the POST that started the run ends (nothing else
        # rides on the context: the ledger is in the run's callbacks)
        task = asyncio.create_task(self._run(info.run_id, chain, value, config, ledger),
                                   context=contextvars.Context())
        self._tasks[info.run_id] = task
        task.add_done_callback(lambda _: self._forget(info.run_id))

    def _forget(self, run_id: str) -> None:
        self._tasks.pop(run_id, None)
        self._why.pop(run_id, None)

    async def cancel(self, run_id: str) -> None:
        """Cancel the run wherever it runs (this process, or a replica via the store)."""
        if run_id in self._tasks:
            self._cancel_here(run_id)
        else:
            await self.store.publish_cancel(run_id)

    def _cancel_here(self, run_id: str, why: str = "cancelled by DELETE") -> None:
        task = self._tasks.get(run_id)
        if task is not None and not task.done():
            self._why.setdefault(run_id, why)
            task.cancel()

    async def _watch_readers(self, run_id: str) -> None:
        """Cancel the run once nobody has read it for ``grace`` seconds."""
        every = min(self.store.heartbeat, self.grace / 4)
        while True:
            await asyncio.sleep(every)
            if await self.store.idle_for(run_id) > self.grace:
                self._cancel_here(run_id, f"no reader for {self.grace:g} s")
                return

    async def _run(self, run_id: str, chain: Runnable[Any, Any], value: Any,
                   config: RunnableConfig, ledger: Ledger) -> None:
        store, event_id = self.store, 0
        watcher = asyncio.create_task(self._watch_readers(run_id))
        status = RunStatus.DONE
        try:
            with closing_upstreams():  # whatever the run opened upstream closes with it
                event_id += 1
                await store.append(run_id, event_id, sse_block(
                    event_id, "metadata", f'{{"run_id": "{run_id}"}}'))
                config = ledger.config({**config, "run_id": uuid.UUID(run_id)})
                stream = cast(AsyncGenerator[Any, None], chain.astream(value, config))
                async with aclosing(stream):
                    async for chunk in stream:
                        event_id += 1
                        await store.append(run_id, event_id, sse_block(
                            event_id, "data", _serializer.dumps(chunk).decode()))
            # an empty data line: browsers never dispatch an event without data
            tail = sse_block(event_id + 1, "end", "")
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # ours: record the end below, then stop quietly
            status = RunStatus.CANCELLED
            why = self._why.get(run_id, "cancelled")
            logger.info("run %s cancelled: %s", run_id, why)
            tail = sse_block(event_id + 1, "error",
                             run_error_data(409, "cancelled", f"The run was cancelled: {why}."))
        except Exception as exc:
            status = RunStatus.FAILED
            logger.error("run %s failed: %s: %s", run_id, type(exc).__name__, exc)
            tail = sse_block(event_id + 1, "error", sse_error_data(exc).decode())
        finally:
            watcher.cancel()
        try:
            run = ledger.last
            await store.finish(run_id, status, run.usage() if run is not None else None,
                               event_id + 1, tail)
        except Exception as exc:
            logger.error("run %s: could not record its end: %s: %s", run_id,
                         type(exc).__name__, exc)
