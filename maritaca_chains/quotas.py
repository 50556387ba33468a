"""Per-key quotas: requests in a window and tokens in a budget, counted by ``limits``.

Use ``Quotas.from_settings(settings)`` once per app; ``ledger.RunAccounts`` holds it: the
request rules (``request_rules``) admit every run through it before it starts, and each
run's ledger charges its tokens when the run ends. Each run is one request
(``MARITACA_CHAINS_RATE_LIMIT``, moving window: a ``/batch`` of N inputs is N, every
WebSocket run one); the tokens a run used, input + output, are charged to the key's
budget (``MARITACA_CHAINS_TOKEN_BUDGET``, fixed window: it counts what was spent even past
the limit, and says when it starts again). Over either: a 429 with ``Retry-After``,
before any upstream call.

Both settings take the ``limits`` notation, a default and per-key overrides, the key named
by its last characters (``*`` then at least 4 of them, matching exactly one key)::

    MARITACA_CHAINS_RATE_LIMIT="60/minute, *a1b2=600/minute, *c3d4=none"
    MARITACA_CHAINS_TOKEN_BUDGET="200000/day, *a1b2=1000/minute;2000000/day"

``none`` exempts a key; ``;`` joins several limits. Without access keys, all callers
share one quota. Counts live in this process, or in Redis with
``MARITACA_CHAINS_REDIS_URL`` (every replica enforces the same counts). A charge Redis
cannot take while it is down is kept in the process and paid when it is back
(``unpaid_charges``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.storage import storage_from_string

from .quota_exceeded import QuotaExceeded
from .redis_outage import REDIS_DOWN
from .security import key_label
from .settings import ServerSettings
from .unpaid_charges import UnpaidCharges

__all__ = ["QuotaExceeded", "Quotas", "parse_quota"]

_NO_LIMIT = frozenset({"none", "unlimited", "off"})


def parse_quota(text: str | None, keys: Sequence[str]) -> tuple[
        list[RateLimitItem], dict[str, list[RateLimitItem]]]:
    """``"60/minute, *a1b2=600/minute, *c3d4=none"`` as (default limits, {key: limits}).

    Raises ValueError naming what is wrong (a bad limit, or a suffix matching no key or
    several)."""
    default: list[RateLimitItem] = []
    per_key: dict[str, list[RateLimitItem]] = {}
    for entry in (e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        suffix, _, limit = entry.partition("=") if entry.startswith("*") else ("", "", entry)
        items = _limits(limit.strip(), entry)
        if not suffix:
            default = items
            continue
        tail = suffix[1:].strip()
        matches = [k for k in keys if k.endswith(tail)]
        if len(tail) < 4 or len(matches) != 1:
            raise ValueError(f"quota entry {entry!r}: '*' must be followed by at least 4 last "
                             f"characters of exactly one access key (matched {len(matches)})")
        per_key[matches[0]] = items
    return default, per_key


def _limits(limit: str, entry: str) -> list[RateLimitItem]:
    if limit.lower() in _NO_LIMIT:
        return []
    try:
        return parse_many(limit.replace("|", ";"))
    except ValueError as exc:
        raise ValueError(f"quota entry {entry!r}: not a limit in the limits notation "
                         f"(e.g. 60/minute, 200000/day, 10/second;100/minute): {exc}") from exc


@dataclass
class _KeyQuota:
    requests: list[RateLimitItem]
    tokens: list[RateLimitItem]


@dataclass
class Quotas:
    """The limits of every key and the storage that counts them (see the module doc)."""

    storage: Storage
    default: _KeyQuota
    by_label: dict[str, _KeyQuota] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.requests = MovingWindowRateLimiter(self.storage)
        self.tokens = FixedWindowRateLimiter(self.storage)
        self.unpaid = UnpaidCharges(self.tokens)  # charges Redis could not take yet

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Quotas | None:
        """The app's quotas, or None when neither setting is given."""
        if not (settings.rate_limit or settings.token_budget):
            return None
        keys = [k.get_secret_value() for k in settings.access_keys]
        requests, requests_by_key = parse_quota(settings.rate_limit, keys)
        tokens, tokens_by_key = parse_quota(settings.token_budget, keys)
        by_label = {key_label(k): _KeyQuota(requests_by_key.get(k, requests),
                                               tokens_by_key.get(k, tokens))
                    for k in {*requests_by_key, *tokens_by_key}}
        storage: Storage
        if settings.redis_url is not None:
            storage = storage_from_string(  # type: ignore[assignment]
                "async+" + settings.redis_url.get_secret_value(),
                implementation="redispy", key_prefix="maritaca_chains:quota")
        else:
            storage = MemoryStorage()
        return cls(storage, _KeyQuota(requests, tokens), by_label)

    def of(self, label: str) -> _KeyQuota:
        return self.by_label.get(label, self.default)

    async def admit(self, label: str, runs: int = 1) -> None:
        """Count ``runs`` requests for ``label`` (0: only check one more would fit); raise
        QuotaExceeded if its budget is spent or its request limit reached (a refused
        request spends nothing)."""
        quota = self.of(label)
        for item in quota.tokens:
            if not await self.tokens.test(item, "tokens", label):
                stats = await self.tokens.get_window_stats(item, "tokens", label)
                raise QuotaExceeded("tokens", item, stats.reset_time)
        # every limit is asked first, then counted: a request one limit refuses must not
        # have been counted by the limits before it
        for item in quota.requests:
            if not await self.requests.test(item, "requests", label, cost=max(runs, 1)):
                await self._refuse_requests(item, label)
        if runs:
            for item in quota.requests:
                if not await self.requests.hit(item, "requests", label, cost=runs):
                    await self._refuse_requests(item, label)  # filled since it was asked
        if self.unpaid:
            self.unpaid.wake()  # Redis answers again: pay what it could not take

    async def _refuse_requests(self, item: RateLimitItem, label: str) -> NoReturn:
        stats = await self.requests.get_window_stats(item, "requests", label)
        raise QuotaExceeded("requests", item, stats.reset_time)

    async def spend(self, label: str, tokens: int) -> None:
        """Charge ``tokens`` to ``label``'s budgets (counted even past the limit); what
        Redis cannot take now is kept and charged when it is back (``unpaid``)."""
        if tokens > 0:
            for item in self.of(label).tokens:
                try:
                    await self.tokens.hit(item, "tokens", label, cost=tokens)
                except REDIS_DOWN as exc:
                    self.unpaid.owe(label, item, tokens, exc)

    async def aclose(self) -> None:
        """At shutdown: the last try to pay what is owed (what is left is dropped,
        logged and counted)."""
        await self.unpaid.aclose()

    async def remaining_tokens(self, label: str) -> int | None:
        """What is left of the tightest token budget (None: no budget)."""
        left = [(await self.tokens.get_window_stats(item, "tokens", label)).remaining
                for item in self.of(label).tokens]
        return min(left) if left else None
