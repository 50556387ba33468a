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
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, cast

from fastapi import HTTPException
from langchain_core.runnables import Runnable, RunnableConfig

from maritaca import closing_upstreams

from ..ledger import Ledger
from .events import RunInfo, RunStatus
from .store import RunStore
from .wire import BY_DELETE, CANCELLED, SHUTTING_DOWN, LangServeWire, Reason, RunWire

__all__ = ["RunManager"]

logger = logging.getLogger("maritaca_chains.runs")


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
        """Stop this process's runs (``stop_runs``) and close the store."""
        await self.stop_runs()
        if self._opened is not None:
            await self.store.aclose()

    @property
    def running(self) -> int:
        """Runs in progress in this process."""
        return len(self._tasks)

    async def stop_runs(self) -> None:
        """Cancel this process's runs because the server is shutting down: each ends
        with a ``server_shutting_down`` error event, in the store, so a reader on any
        replica gets it (and can start the run again elsewhere)."""
        tasks = list(self._tasks.values())
        for run_id in self._tasks:
            self._why[run_id] = SHUTTING_DOWN
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def start(self, info: RunInfo, chain: Runnable[Any, Any], value: Any,
                    config: RunnableConfig, ledger: Ledger, *,
                    wire: RunWire | None = None) -> None:
        """Record the run (``RunsFull`` if there is no room) and start it; its events are
        written by ``wire`` (default: LangServe's ``/stream`` SSE). ``ledger`` (from the
        request that starts it) logs, counts and charges the run, and gives its status
        its ``usage``; it rides the run's callbacks, not the context."""
        await self.ensure_open()
        await self.store.create(info)
        # a fresh context: the run must not inherit the request's upstream scope, which
        # closes what it opened when the POST that started the run ends
        task = asyncio.create_task(
            self._run(info.run_id, chain, value, config, ledger, wire or LangServeWire()),
            context=contextvars.Context())
        self._tasks[info.run_id] = task
        task.add_done_callback(lambda _: self._forget(info.run_id))

    def _forget(self, run_id: str) -> None:
        self._tasks.pop(run_id, None)
        self._why.pop(run_id, None)

    async def cancel(self, run_id: str, why: str = BY_DELETE) -> None:
        """Cancel the run wherever it runs (this process, or a replica via the store)."""
        if run_id in self._tasks:
            self._cancel_here(run_id, why)
        else:
            await self.store.publish_cancel(run_id)

    async def cancel_and_wait(self, run_id: str, why: str = BY_DELETE,
                              within: float = 2.0) -> RunInfo | None:
        """Cancel the run if it still runs and wait (at most ``within`` seconds: another
        replica's run ends a moment after the store tells it) until it has ended, so
        what it held (a chat thread's turn) is free; the run as it stands then."""
        info = await self.store.get(run_id)
        if info is None or info.status is not RunStatus.RUNNING:
            return info
        await self.cancel(run_id, why)
        deadline = asyncio.get_running_loop().time() + within
        while info.status is RunStatus.RUNNING and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
            info = await self.store.get(run_id) or info
        return info

    def _cancel_here(self, run_id: str, why: str = BY_DELETE) -> None:
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
                self._cancel_here(run_id, Reason("no_reader", seconds=f"{self.grace:g}"))
                return

    async def _run(self, run_id: str, chain: Runnable[Any, Any], value: Any,
                   config: RunnableConfig, ledger: Ledger, wire: RunWire) -> None:
        store, last = self.store, [0]  # last: the id of the last event written
        watcher = asyncio.create_task(self._watch_readers(run_id))
        status = RunStatus.DONE

        async def emit(render: Callable[[int], bytes]) -> None:
            last[0] += 1
            await store.append(run_id, last[0], render(last[0]))

        try:
            with closing_upstreams():  # whatever the run opened upstream closes with it
                await emit(lambda event_id: wire.opening(event_id, run_id))
                given = config.get("callbacks") or []
                config = {**config, "run_id": uuid.UUID(run_id), "callbacks": [
                    *wire.callbacks(emit), *(given if isinstance(given, list) else []), ledger]}
                stream = cast(AsyncGenerator[Any, None], chain.astream(value, config))
                async with aclosing(stream):
                    async for chunk in stream:
                        last[0] += 1
                        await store.append(run_id, last[0], wire.chunk(last[0], chunk))
            tail = wire.ended(last[0] + 1)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # ours: record the end below, then stop quietly
            status = RunStatus.CANCELLED
            why = self._why.get(run_id, CANCELLED)
            logger.info("run %s cancelled: %s", run_id, why)
            tail = wire.cancelled(last[0] + 1, why)
        except Exception as exc:
            status = RunStatus.FAILED
            # a refusal (a busy or unknown thread, bad input) is the client's to mend
            refused = isinstance(exc, HTTPException) and exc.status_code < 500
            logger.log(logging.INFO if refused else logging.ERROR, "run %s failed: %s: %s",
                       run_id, type(exc).__name__, exc)
            tail = wire.failed(last[0] + 1, exc)
        finally:
            watcher.cancel()
        try:
            run = ledger.last
            await store.finish(run_id, status, run.usage() if run is not None else None,
                               last[0] + 1, tail)
        except Exception as exc:
            logger.error("run %s: could not record its end: %s: %s", run_id,
                         type(exc).__name__, exc)
