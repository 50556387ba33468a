"""``GET /livez`` and ``GET /readyz``: cheap answers for orchestrators, revealing nothing.

- ``/livez``: 200 while the process answers at all (restart it when this fails).
- ``/readyz``: 200 when this replica should get new work; 503 while it drains (after
  SIGTERM), when the embedded model's process is not running, or when
  ``MARITACA_CHAINS_REDIS_URL`` is set and Redis does not answer a PING within a second.

Both are answered before any access rule (no key, any Host) and say only
``{"status": ...}``; the reason a replica is not ready goes to its log, once per change.
``/healthz`` (backend, model) is a different thing and stays behind the usual rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..backend import ServedModel
from ..settings import ServerSettings
from .drain import Drain

__all__ = ["LIVE_PATH", "READY_PATH", "Readiness"]

logger = logging.getLogger("maritaca_chains.lifecycle")

LIVE_PATH, READY_PATH = "/livez", "/readyz"
_REDIS_TIMEOUT = 1.0
_REDIS_CACHE_SECONDS = 1.0  # probes in a burst (several orchestrators) ping Redis once


class Readiness:
    """Whether this replica should get new work, and why not (for the log only)."""

    def __init__(self, drain: Drain, served: ServedModel, settings: ServerSettings) -> None:
        self.drain, self.served = drain, served
        self._redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        self._redis: Any = None
        self._redis_checked = (0.0, True)
        self._last_reason: str | None = None

    async def why_not(self) -> str | None:
        """None when ready; else a short reason (logged, never sent)."""
        reason = None
        if self.drain.draining:
            reason = "draining (shutting down)"
        elif self.served.local_backend is not None and not self.served.local_backend.running:
            reason = "the embedded model's process is not running"
        elif self._redis_url is not None and not await self._redis_answers():
            reason = "Redis (MARITACA_CHAINS_REDIS_URL) does not answer"
        if reason != self._last_reason:
            if reason is None:
                logger.warning("ready again")
            else:
                logger.warning("not ready: %s", reason)
            self._last_reason = reason
        return reason

    async def _redis_answers(self) -> bool:
        checked_at, answered = self._redis_checked
        if time.monotonic() - checked_at < _REDIS_CACHE_SECONDS:
            return answered
        if self._redis is None:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(self._redis_url or "", socket_timeout=_REDIS_TIMEOUT,
                                         socket_connect_timeout=_REDIS_TIMEOUT)
        try:
            answered = bool(await asyncio.wait_for(self._redis.ping(), _REDIS_TIMEOUT * 2))
        except Exception:  # any failure: not ready (the reason is logged by why_not)
            answered = False
        self._redis_checked = (time.monotonic(), answered)
        return answered

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
