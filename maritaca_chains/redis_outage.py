"""Redis outages, named: what a client gets while ``MARITACA_CHAINS_REDIS_URL`` cannot be
reached, and the client settings that let the server recover by itself.

- A request that needs Redis (a run route, a quota check) gets ``503`` with
  ``Retry-After`` and ``{"detail": "Redis is unavailable...", "type":
  "redis_unavailable"}``; with ``MARITACA_CHAINS_REDIS_FAIL_OPEN=true`` the quota
  check is skipped instead (logged, and counted in
  ``maritaca_chains_redis_unavailable_total{outcome="served"}``).
- A run's reader gets an ``error`` event of type ``redis_unavailable`` (the error
  mapping in ``error_responses`` names it on every face).
- ``redis_client(url)`` retries a command a few times on a fresh connection (a
  restarted Redis leaves stale pooled connections) and gives up quickly when Redis
  is down, so the 503 comes in seconds; subscribers re-subscribe (``runs.redis_store``).

Messages never carry the URL (it may hold a password).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from limits.errors import StorageError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .messages import DEFAULT_LANGUAGE, Language, language, say
from .metrics import redis_unavailable
from .refusals import Refusal

__all__ = ["REDIS_DOWN", "RETRY_AFTER_SECONDS", "UNAVAILABLE", "redis_client",
           "redis_unavailable_http", "redis_unavailable_json"]

logger = logging.getLogger("maritaca_chains.server")

# what a command raises while Redis cannot be reached (limits wraps them when asked to)
REDIS_DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError,
                                           StorageError)
RETRY_AFTER_SECONDS = 5
UNAVAILABLE = say("redis_unavailable", "en")  # the words: messages.py


def redis_client(url: str) -> Any:
    """A Redis client for ``url`` that recovers from a restart by itself: a command
    retries twice on a new connection, connecting gives up after 2 s."""
    return Redis.from_url(url, socket_connect_timeout=2, health_check_interval=10,
                          retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
                          retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError])


def redis_unavailable_http(lang: Language = DEFAULT_LANGUAGE) -> HTTPException:
    """The 503 to raise where an HTTPException is what the caller handles (dependencies,
    WebSocket handshakes), its message in ``lang``."""
    redis_unavailable("refused")
    return Refusal(503, "redis_unavailable", lang,
                   headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def redis_unavailable_json(request: Request, exc: Exception) -> JSONResponse:
    """The app's exception handler for ``REDIS_DOWN``: a named 503, never a 500."""
    logger.warning("%s %s: Redis is unavailable (%s)", request.method, request.url.path,
                   type(exc).__name__)
    redis_unavailable("refused")
    return JSONResponse({"detail": say("redis_unavailable", language(request.headers)),
                         "type": "redis_unavailable"}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
