"""Browser sessions behind the login cookie, and the throttle on failed logins.

``POST /login`` with a right key starts a session: the cookie holds a random token
(never the key, nor anything derived from it), and the server keeps which key's label
it stands for until ``MARITACA_CHAINS_SESSION_SECONDS`` (12 h) have passed, in this
process or, with ``MARITACA_CHAINS_REDIS_URL``, in Redis (every replica knows every
session; only the token's SHA-256 is stored). ``POST /logout`` ends it at once.

``LoginThrottle``: wrong keys from one client address are limited
(``MARITACA_CHAINS_LOGIN_ATTEMPTS``, 5/minute, the ``limits`` notation); beyond, every
login from that address gets 429 with ``Retry-After`` until the window moves on.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections import OrderedDict
from typing import Any

from limits import parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from .redis_outage import redis_client
from .settings import ServerSettings

__all__ = ["LoginThrottle", "Sessions"]

_MAX_MEMORY_SESSIONS = 10_000  # beyond, the oldest session ends first
_PREFIX = "maritaca_chains:session:"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Login sessions: ``create(label)`` gives a cookie token, ``label_of(token)`` the
    key label it stands for (None: unknown, expired or ended), ``drop(token)`` ends it."""

    def __init__(self, ttl: float, redis_url: str | None = None) -> None:
        self.ttl, self.redis_url = ttl, redis_url
        self._redis: Any = None
        # memory: the sessions; Redis: labels of the sessions seen here (for known_label)
        self._local: OrderedDict[str, tuple[str, float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Sessions:
        url = settings.redis_url.get_secret_value() if settings.redis_url else None
        return cls(settings.session_seconds, url)

    @property
    def redis(self) -> Any:
        if self._redis is None and self.redis_url is not None:
            self._redis = redis_client(self.redis_url)
        return self._redis

    def _remember(self, digest: str, label: str, expires: float) -> None:
        self._local[digest] = (label, expires)
        self._local.move_to_end(digest)
        now = time.time()
        while self._local and (len(self._local) > _MAX_MEMORY_SESSIONS
                               or next(iter(self._local.values()))[1] <= now):
            self._local.popitem(last=False)

    async def create(self, label: str) -> str:
        token = secrets.token_urlsafe(32)
        digest, expires = _digest(token), time.time() + self.ttl
        if self.redis is not None:
            await self.redis.set(_PREFIX + digest, label, px=int(self.ttl * 1000))
        self._remember(digest, label, expires)
        return token

    async def label_of(self, token: str) -> str | None:
        """The label of a live session (asks Redis every time: a logout anywhere counts)."""
        if not token:
            return None
        digest = _digest(token)
        if self.redis is None:
            return self.known_label(token)
        raw = await self.redis.get(_PREFIX + digest)
        if raw is None:
            self._local.pop(digest, None)
            return None
        label = raw.decode() if isinstance(raw, bytes) else str(raw)
        if digest not in self._local:
            ttl_ms = await self.redis.pttl(_PREFIX + digest)
            self._remember(digest, label, time.time() + max(ttl_ms, 0) / 1000)
        return label

    def known_label(self, token: str) -> str | None:
        """Without I/O: the label of a session this process started or has checked (for
        labelling a request the access guard already let in)."""
        entry = self._local.get(_digest(token)) if token else None
        if entry is None or entry[1] <= time.time():
            return None
        return entry[0]

    async def drop(self, token: str) -> None:
        digest = _digest(token)
        self._local.pop(digest, None)
        if self.redis is not None:
            await self.redis.delete(_PREFIX + digest)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


class LoginThrottle:
    """Failed logins per client address, in this process or in Redis."""

    def __init__(self, limit: str, redis_url: str | None = None) -> None:
        self.items = parse_many(limit.replace("|", ";"))
        storage: Storage
        if redis_url is not None:
            storage = storage_from_string(  # type: ignore[assignment]
                "async+" + redis_url, implementation="redispy",
                key_prefix="maritaca_chains:login")
        else:
            storage = MemoryStorage()
        self.limiter = MovingWindowRateLimiter(storage)

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> LoginThrottle:
        url = settings.redis_url.get_secret_value() if settings.redis_url else None
        return cls(settings.login_attempts, url)

    async def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None if it may now."""
        for item in self.items:
            if not await self.limiter.test(item, "failed", address):
                stats = await self.limiter.get_window_stats(item, "failed", address)
                return max(1, math.ceil(stats.reset_time - time.time()))
        return None

    async def failed(self, address: str) -> None:
        for item in self.items:
            await self.limiter.hit(item, "failed", address)
