"""Runs in Redis, so every replica behind a load balancer can serve any run's readers.

Per run, with ``prefix`` ``maritaca_chains:``:

- ``run:<id>`` a hash: the ``RunInfo`` fields, plus ``seen`` (when a reader last
  proved it was there, refreshed every ``heartbeat`` seconds while one follows);
- ``run:<id>:events`` a stream, entry ``0-<event id>`` holding the encoded SSE block
  (field ``b``; ``t`` on the last one), capped with ``MAXLEN`` ``max_events``;
- ``runs:active`` a sorted set of the runs in progress (the ``max_runs`` cap), and
  ``runs:active:<owner>`` each owner's (the ``max_per_owner`` cap);
- channel ``runs:cancel``: a ``DELETE`` served by one replica reaches the one running it;
- ``name:<name>`` a string, the run a face named (``name_run``), expiring with the run.

While a run is in progress its keys are kept ``ttl`` + one hour from the last write (a
replica that dies mid-run leaves nothing forever); when it ends, ``ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from ..redis_outage import REDIS_DOWN, redis_client
from .events import EventsDropped, KeyRunsFull, RunInfo, RunsFull, RunStatus
from .store import CancelCallback, RunStore

__all__ = ["RedisRunStore"]

logger = logging.getLogger("maritaca_chains.runs")

_RUNNING_EXTRA = 3600.0  # seconds a run in progress outlives its last write
_BACKLOG = 2000          # appends waiting for Redis before the runner waits too
# DEL the name only if it still points at this run (a later run may have taken it)
_UNNAME = "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end"


class RedisRunStore(RunStore):
    """Runs in Redis at ``url`` (``redis://[:password@]host:port/db``)."""

    def __init__(self, url: str, *, ttl: float, max_events: int, max_runs: int,
                 max_per_owner: int | None = None, heartbeat: float = 1.0,
                 prefix: str = "maritaca_chains:") -> None:
        self.url, self.ttl, self.max_events, self.max_runs = url, ttl, max_events, max_runs
        self.max_per_owner = max_per_owner
        self._owners: dict[str, str] = {}  # this process's runs in progress: their owner
        self.heartbeat, self.prefix = heartbeat, prefix
        self._redis: Any = None  # redis.asyncio.Redis (its stubs type replies loosely)
        self._callbacks: list[CancelCallback] = []
        self._listener: asyncio.Task[None] | None = None
        self._pending: dict[str, list[tuple[int, bytes]]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ connection

    @property
    def redis(self) -> Any:
        if self._redis is None:
            raise RuntimeError("RedisRunStore.open() was not called")
        return self._redis

    async def open(self) -> None:
        self._redis = redis_client(self.url)
        subscribed = asyncio.get_running_loop().create_future()
        self._listener = asyncio.create_task(self._listen(subscribed))
        await asyncio.wait({subscribed, self._listener}, timeout=2,
                           return_when=asyncio.FIRST_COMPLETED)

    async def aclose(self) -> None:
        for task in [*self._flushers.values(), *([self._listener] if self._listener else [])]:
            task.cancel()
        for task in [*self._flushers.values(), *([self._listener] if self._listener else [])]:
            with contextlib.suppress(BaseException):
                await task
        if self._redis is not None:
            await self._redis.aclose()

    async def _listen(self, subscribed: asyncio.Future[None]) -> None:
        """Deliver published cancellations; when Redis goes away, subscribe again as
        soon as it is back (a DELETE served by another replica must reach this one)."""
        delay = 0.1
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._key("runs:cancel"))
                if not subscribed.done():
                    subscribed.set_result(None)
                elif delay > 0.1:
                    logger.info("Redis is back: listening for run cancellations again")
                delay = 0.1
                async for message in pubsub.listen():
                    run_id = message["data"].decode()
                    for callback in self._callbacks:
                        callback(run_id)
            except REDIS_DOWN as exc:
                if delay == 0.1:
                    logger.warning("run cancellations: Redis is unavailable (%s); "
                                   "subscribing again when it is back", type(exc).__name__)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _keys(self, run_id: str) -> tuple[str, str]:
        return self._key(f"run:{run_id}"), self._key(f"run:{run_id}:events")

    # ----------------------------------------------------------------- the writer

    async def create(self, info: RunInfo) -> None:
        active, now = self._key("runs:active"), time.time()
        owned = self._key(f"runs:active:{info.owner}")
        stale = now - self.ttl - _RUNNING_EXTRA
        async with self.redis.pipeline(transaction=False) as pipe:
            # a run older than this was left by a replica that died: not in progress
            pipe.zremrangebyscore(active, "-inf", stale)
            pipe.zcard(active)
            pipe.zremrangebyscore(owned, "-inf", stale)
            pipe.zcard(owned)
            _, count, _, mine = await pipe.execute()
        # (not atomic: replicas racing may pass these by a few)
        if count >= self.max_runs:
            raise RunsFull(f"{self.max_runs} runs are in progress")
        if self.max_per_owner is not None and mine >= self.max_per_owner:
            raise KeyRunsFull(f"this key already has {self.max_per_owner} runs in progress")
        meta, _ = self._keys(info.run_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta, mapping={**info.to_fields(), "seen": repr(now)})
            pipe.pexpire(meta, int((self.ttl + _RUNNING_EXTRA) * 1000))
            pipe.zadd(active, {info.run_id: now})
            pipe.zadd(owned, {info.run_id: now})
            pipe.pexpire(owned, int((self.ttl + _RUNNING_EXTRA) * 1000))
            await pipe.execute()
        self._owners[info.run_id] = info.owner

    async def append(self, run_id: str, event_id: int, block: bytes) -> None:
        """Queued, and written by one flusher per run in pipelined batches: a chunk does
        not wait for a Redis round trip, and a fast answer costs few round trips."""
        pending = self._pending.setdefault(run_id, [])
        pending.append((event_id, block))
        flusher = self._flushers.get(run_id)
        if flusher is not None and flusher.done():
            if (error := flusher.exception()) is not None:
                raise error  # Redis failed: the run fails rather than lose events
            flusher = None
        if flusher is None:
            self._flushers[run_id] = asyncio.create_task(self._flush(run_id))
        elif len(pending) > _BACKLOG:
            await asyncio.shield(flusher)

    async def _flush(self, run_id: str, last: dict[str, str] | None = None) -> None:
        meta, events = self._keys(run_id)
        while batch := self._pending.pop(run_id, None):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for event_id, block in batch:
                        fields = {"b": block, "t": b"1"} if last and event_id == batch[-1][0] \
                            else {"b": block}
                        pipe.xadd(events, fields, id=f"0-{event_id}", maxlen=self.max_events,
                                  approximate=False)
                    pipe.hset(meta, mapping={"events": str(batch[-1][0]), **(last or {})})
                    expire = self.ttl if last else self.ttl + _RUNNING_EXTRA
                    pipe.pexpire(meta, int(expire * 1000))
                    pipe.pexpire(events, int(expire * 1000))
                    await pipe.execute()
            except BaseException:
                # keep the batch for the next flush (finish retries): a Redis outage must
                # not leave a hole in the ids, which readers would take for dropped events
                self._pending[run_id] = batch + self._pending.get(run_id, [])
                raise

    async def finish(self, run_id: str, status: RunStatus, usage: dict[str, Any] | None,
                     event_id: int, block: bytes) -> None:
        flusher = self._flushers.pop(run_id, None)
        if flusher is not None:
            with contextlib.suppress(Exception):  # events lost with it: still say how it ended
                await asyncio.shield(flusher)
        self._pending.setdefault(run_id, []).append((event_id, block))
        # the slots first: once a reader sees the end, its key may start another run
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self._key("runs:active"), run_id)
            if (owner := self._owners.pop(run_id, None)) is not None:
                pipe.zrem(self._key(f"runs:active:{owner}"), run_id)
            await pipe.execute()
        info = RunInfo(run_id, "", "", status=status, usage=usage, finished_at=time.time())
        fields = info.to_fields()
        await self._flush(run_id, last={k: fields[k] for k in ("status", "usage",
                                                               "finished_at")})

    # ----------------------------------------------------------------- the readers

    async def get(self, run_id: str) -> RunInfo | None:
        meta, _ = self._keys(run_id)
        raw = await self.redis.hgetall(meta)
        if not raw:
            return None
        return RunInfo.from_fields({k.decode(): v.decode() for k, v in raw.items()})

    async def follow(self, run_id: str, after: int, *, idle: float
                     ) -> AsyncGenerator[list[bytes], None]:
        meta, events = self._keys(run_id)
        last_id, touched, quiet_since = after, 0.0, time.monotonic()
        block_ms = max(1, int(self.heartbeat * 1000))
        while True:
            now = time.monotonic()
            if now - touched >= self.heartbeat:
                await self.redis.hset(meta, "seen", repr(time.time()))
                touched = now
            answer = await self.redis.xread({events: f"0-{last_id}"}, count=1000,
                                            block=block_ms)
            if not answer:
                status = await self.redis.hget(meta, "status")
                if status is None or status.decode() != RunStatus.RUNNING:
                    return  # expired, or ended with its last event already read
                if time.monotonic() - quiet_since >= idle:
                    quiet_since = time.monotonic()
                    yield []
                continue
            entries = answer[0][1]
            batch, ended = [], False
            for entry_id, fields in entries:
                seq = int(entry_id.split(b"-", 1)[1])
                if seq != last_id + 1:
                    raise EventsDropped(seq)
                last_id = seq
                batch.append(fields[b"b"])
                ended = b"t" in fields
            quiet_since = time.monotonic()
            yield batch
            if ended:
                return

    async def idle_for(self, run_id: str) -> float:
        meta, _ = self._keys(run_id)
        seen = await self.redis.hget(meta, "seen")
        # a reader refreshes `seen` every heartbeat: within two, it is still there
        quiet = time.time() - float(seen) if seen else 0.0
        return 0.0 if quiet <= 2 * self.heartbeat else quiet

    async def publish_cancel(self, run_id: str) -> None:
        await self.redis.publish(self._key("runs:cancel"), run_id)

    def on_cancel(self, callback: CancelCallback) -> None:
        self._callbacks.append(callback)

    # ----------------------------------------------------------------- names

    async def name_run(self, name: str, run_id: str) -> str | None:
        previous = await self.redis.set(self._key(f"name:{name}"), run_id, get=True,
                                        px=int((self.ttl + _RUNNING_EXTRA) * 1000))
        return previous.decode() if previous else None

    async def named_run(self, name: str) -> str | None:
        run_id = await self.redis.get(self._key(f"name:{name}"))
        return run_id.decode() if run_id else None

    async def unname_run(self, name: str, run_id: str) -> None:
        await self.redis.eval(_UNNAME, 1, self._key(f"name:{name}"), run_id)
