"""Where runs live: the interface, and the in-process store (the default).

``RunStore`` is what the runner and the routes use; ``MemoryRunStore`` keeps runs in
this process, ``RedisRunStore`` (``redis_store``) in Redis Streams so replicas share
them. The runner is a run's only writer; any number of readers follow it.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from typing import Any

from .events import EventsDropped, KeyRunsFull, RunInfo, RunsFull, RunStatus

__all__ = ["CancelCallback", "MemoryRunStore", "RunStore"]

CancelCallback = Callable[[str], None]


class RunStore(ABC):
    """Runs' status and events. ``heartbeat`` is how often a reader proves it is
    still there (what the no-reader grace is measured against)."""

    heartbeat: float = 1.0

    async def open(self) -> None:  # noqa: B027 - optional hook, nothing to do in memory
        """Connect (called once, from a running loop, before first use)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    async def create(self, info: RunInfo) -> None:
        """Record a new running run; ``RunsFull`` when there is no room, ``KeyRunsFull``
        when its owner already holds its share."""

    @abstractmethod
    async def get(self, run_id: str) -> RunInfo | None:
        """The run, or None when unknown or expired."""

    @abstractmethod
    async def append(self, run_id: str, event_id: int, block: bytes) -> None:
        """Add the next event (ids increase by one from 1)."""

    @abstractmethod
    async def finish(self, run_id: str, status: RunStatus, usage: dict[str, Any] | None,
                     event_id: int, block: bytes) -> None:
        """Add the last event and mark the run ended; its events expire after the TTL."""

    @abstractmethod
    def follow(self, run_id: str, after: int, *, idle: float
               ) -> AsyncGenerator[list[bytes], None]:
        """The run's events after id ``after``, in batches, live until its last event;
        an empty batch after ``idle`` seconds without events (time for a keep-alive).
        Raises ``EventsDropped`` if events the reader needs are no longer kept."""

    @abstractmethod
    async def idle_for(self, run_id: str) -> float:
        """Seconds since the run last had a reader (0 while it has one)."""

    @abstractmethod
    async def publish_cancel(self, run_id: str) -> None:
        """Ask whichever process runs ``run_id`` to cancel it (see ``on_cancel``)."""

    @abstractmethod
    def on_cancel(self, callback: CancelCallback) -> None:
        """Call ``callback(run_id)`` for every cancellation published."""

    # A face may give a run a name of its own (the AI SDK face: the chat's id), so that a
    # client that knows only the name finds the run again. A name lives as long as its run
    # is kept, at most; naming another run replaces it.

    @abstractmethod
    async def name_run(self, name: str, run_id: str) -> str | None:
        """Point ``name`` at ``run_id``; returns the run it pointed at before, if any."""

    @abstractmethod
    async def named_run(self, name: str) -> str | None:
        """The run ``name`` points at (None: never named, unnamed, or its run expired)."""

    @abstractmethod
    async def unname_run(self, name: str, run_id: str) -> None:
        """Forget ``name``, if it still points at ``run_id`` (a later run keeps it)."""


class _Run:
    """One run in memory: its encoded events from id ``first_id`` on, and its readers."""

    __slots__ = ("info", "blocks", "first_id", "ended", "waiters", "readers", "left_at",
                 "finished_mono")

    def __init__(self, info: RunInfo) -> None:
        self.info = info
        self.blocks: list[bytes] = []
        self.first_id = 1
        self.ended = False
        self.waiters: list[asyncio.Future[None]] = []
        self.readers = 0
        self.left_at = time.monotonic()  # the grace counts from the start
        self.finished_mono = 0.0

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


class MemoryRunStore(RunStore):
    """Runs in this process: no extra service, lost on restart, not shared by replicas.

    At most ``max_runs`` runs are held (in progress, or ended and within ``ttl``); when
    full, the oldest ended run is dropped to make room, and if every run is still in
    progress a new one is refused (``RunsFull``); one owner holds at most
    ``max_per_owner`` in progress (``KeyRunsFull``). Each keeps its last ``max_events``.
    """

    def __init__(self, *, ttl: float, max_events: int, max_runs: int,
                 max_per_owner: int | None = None) -> None:
        self.ttl, self.max_events, self.max_runs = ttl, max_events, max_runs
        self.max_per_owner = max_per_owner
        self._runs: dict[str, _Run] = {}
        self._ended: OrderedDict[str, _Run] = OrderedDict()  # in the order they ended
        self._callbacks: list[CancelCallback] = []
        self._names: dict[str, str] = {}        # name -> run id
        self._name_of: dict[str, str] = {}      # run id -> its name (gone with the run)

    def _expire(self) -> None:
        deadline = time.monotonic() - self.ttl
        while self._ended:
            run_id, run = next(iter(self._ended.items()))
            if run.finished_mono > deadline:
                break
            self._drop(run_id)

    def _drop(self, run_id: str) -> None:
        self._ended.pop(run_id, None)
        self._runs.pop(run_id, None)
        name = self._name_of.pop(run_id, None)
        if name is not None and self._names.get(name) == run_id:
            del self._names[name]

    async def create(self, info: RunInfo) -> None:
        self._expire()
        if len(self._runs) >= self.max_runs:
            if not self._ended:
                raise RunsFull(f"{self.max_runs} runs are in progress")
            self._drop(next(iter(self._ended)))
        if self.max_per_owner is not None and sum(
                1 for run in self._runs.values()
                if not run.ended and run.info.owner == info.owner) >= self.max_per_owner:
            raise KeyRunsFull(f"this key already has {self.max_per_owner} runs in progress")
        self._runs[info.run_id] = _Run(info)

    async def get(self, run_id: str) -> RunInfo | None:
        self._expire()
        run = self._runs.get(run_id)
        return run.info if run else None

    async def append(self, run_id: str, event_id: int, block: bytes) -> None:
        run = self._runs[run_id]
        blocks = run.blocks
        blocks.append(block)
        run.info.events = event_id
        if len(blocks) > self.max_events:  # trim in slices: not a list shift per event
            cut = len(blocks) - self.max_events + self.max_events // 8
            del blocks[:cut]
            run.first_id += cut
        if run.waiters:
            run.wake()

    async def finish(self, run_id: str, status: RunStatus, usage: dict[str, Any] | None,
                     event_id: int, block: bytes) -> None:
        run = self._runs.get(run_id)
        if run is None:
            return
        await self.append(run_id, event_id, block)
        run.info.status, run.info.usage = status, usage
        run.info.finished_at = time.time()
        run.ended, run.finished_mono = True, time.monotonic()
        self._ended[run_id] = run
        run.wake()

    async def follow(self, run_id: str, after: int, *, idle: float
                     ) -> AsyncGenerator[list[bytes], None]:
        run = self._runs.get(run_id)
        if run is None:
            return
        run.readers += 1
        loop = asyncio.get_running_loop()
        try:
            next_id = after + 1
            while True:
                if next_id < run.first_id:
                    raise EventsDropped(run.first_id)
                end_id = run.first_id + len(run.blocks)
                if next_id < end_id:
                    batch = run.blocks[next_id - run.first_id:]
                    next_id = end_id
                    yield batch
                    continue
                if run.ended:
                    return
                waiter = loop.create_future()
                run.waiters.append(waiter)
                try:
                    await asyncio.wait_for(waiter, idle)
                except TimeoutError:
                    yield []
        finally:
            run.readers -= 1
            if not run.readers:
                run.left_at = time.monotonic()

    async def idle_for(self, run_id: str) -> float:
        run = self._runs.get(run_id)
        if run is None or run.readers:
            return 0.0
        return time.monotonic() - run.left_at

    async def publish_cancel(self, run_id: str) -> None:
        for callback in self._callbacks:
            callback(run_id)

    def on_cancel(self, callback: CancelCallback) -> None:
        self._callbacks.append(callback)

    async def name_run(self, name: str, run_id: str) -> str | None:
        previous = self._names.get(name)
        if previous is not None:
            self._name_of.pop(previous, None)
        self._names[name] = run_id
        self._name_of[run_id] = name
        return previous if previous in self._runs else None

    async def named_run(self, name: str) -> str | None:
        self._expire()
        return self._names.get(name)

    async def unname_run(self, name: str, run_id: str) -> None:
        if self._names.get(name) == run_id:
            del self._names[name]
            self._name_of.pop(run_id, None)
