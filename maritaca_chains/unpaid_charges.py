"""Token charges Redis could not take, kept in this process and paid when it is back.

Use through ``quotas.Quotas``: when a run's tokens cannot be charged to its key's budget
because Redis is down (``redis_outage.REDIS_DOWN``), ``UnpaidCharges.owe`` keeps them,
added up per key and budget, and a task of their own retries every
``RETRY_SECONDS`` (and at once after the next quota check that reaches Redis) until
Redis takes them: the key's usage then includes the run's tokens, in the budget's
window current at payment. The debt is bounded: at most ``MAX_OWED`` key/budget pairs
(a key has one per limit of its budget, so only a server with that many keys can hit
it); a charge past that, or one still owed when the server stops (``aclose`` tries
once more first), is dropped, with a warning in the log and counted, never silently.

Metrics (``metrics.unpaid_tokens``): ``maritaca_chains_unpaid_tokens_total{outcome}``
counts tokens ``owed`` (Redis refused the charge), ``settled`` (paid later) and
``dropped``; the gauge ``maritaca_chains_unpaid_tokens_pending`` is what is owed now.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from limits import RateLimitItem
from limits.aio.strategies import RateLimiter

from . import metrics
from .redis_outage import REDIS_DOWN

__all__ = ["MAX_OWED", "RETRY_SECONDS", "UnpaidCharges"]

logger = logging.getLogger("maritaca_chains.server")

MAX_OWED = 10_000  # key/budget pairs owed at once; past that a charge is dropped
RETRY_SECONDS = 2.0  # between two tries to pay while Redis is still down
CLOSE_SECONDS = 2.0  # the last try at shutdown


@dataclass
class _Debt:
    label: str
    item: RateLimitItem
    tokens: int


class UnpaidCharges:
    """What ``limiter`` (the token budgets' limiter) still owes, per key and budget."""

    def __init__(self, limiter: RateLimiter, *, max_owed: int = MAX_OWED,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        self.limiter, self.max_owed, self.retry_seconds = limiter, max_owed, retry_seconds
        self._owed: dict[tuple[str, str], _Debt] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._counted = 0  # the pending tokens the gauge shows for this debt

    @property
    def pending_tokens(self) -> int:
        """Tokens owed now, over every key and budget."""
        return sum(debt.tokens for debt in self._owed.values())

    def __bool__(self) -> bool:
        return bool(self._owed)

    def owe(self, label: str, item: RateLimitItem, tokens: int, cause: BaseException) -> None:
        """``tokens`` that Redis refused (``cause``) for ``label``'s budget ``item``:
        kept and paid later, or dropped (logged, counted) past ``max_owed``."""
        if not self._add(label, item, tokens):
            self._drop(label, item, tokens, "the debt is at its bound "
                                             f"({self.max_owed} key/budget pairs)")
            return
        metrics.unpaid_tokens("owed", tokens)
        logger.warning("%d tokens for %s not charged yet: Redis is unavailable (%s); kept "
                       "to charge when it is back", tokens, label, type(cause).__name__)
        self._ensure_payer()

    def wake(self) -> None:
        """Redis answered (a quota check passed): pay what is owed now, not at the next
        retry."""
        if self._owed:
            self._ensure_payer()
            if self._wake is not None:
                self._wake.set()

    async def settle(self) -> bool:
        """Pay what Redis takes now; True when nothing is owed any more."""
        for key in list(self._owed):
            debt = self._owed.pop(key, None)
            if debt is None:
                continue
            self._count_pending()
            try:
                await self.limiter.hit(debt.item, "tokens", debt.label, cost=debt.tokens)
            except REDIS_DOWN:
                self._put_back(debt)
                return False
            except BaseException:
                self._put_back(debt)
                raise
            metrics.unpaid_tokens("settled", debt.tokens)
            logger.info("%d tokens for %s charged now that Redis is back", debt.tokens,
                        debt.label)
        return not self._owed

    async def aclose(self) -> None:
        """At shutdown: one last try, then what is still owed is dropped (logged,
        counted)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, RuntimeError):
                pass  # RuntimeError: a task of another (closed) loop
        self._task = None
        if self._owed:
            try:
                await asyncio.wait_for(self.settle(), CLOSE_SECONDS)
            except TimeoutError:
                pass
        for key in list(self._owed):
            debt = self._owed.pop(key)
            self._count_pending()
            self._drop(debt.label, debt.item, debt.tokens, "the server is stopping")

    # ------------------------------------------------------------------ inside
    def _add(self, label: str, item: RateLimitItem, tokens: int) -> bool:
        key = (label, item.key_for())
        debt = self._owed.get(key)
        if debt is None:
            if len(self._owed) >= self.max_owed:
                return False
            self._owed[key] = _Debt(label, item, tokens)
        else:
            debt.tokens += tokens
        self._count_pending()
        return True

    def _put_back(self, debt: _Debt) -> None:
        """A debt Redis did not take after all: owed again, with what came since."""
        if not self._add(debt.label, debt.item, debt.tokens):
            self._drop(debt.label, debt.item, debt.tokens, "the debt is at its bound "
                                                           f"({self.max_owed} key/budget pairs)")

    def _count_pending(self) -> None:
        now = self.pending_tokens
        metrics.unpaid_tokens_pending(now - self._counted)
        self._counted = now

    @staticmethod
    def _drop(label: str, item: RateLimitItem, tokens: int, why: str) -> None:
        metrics.unpaid_tokens("dropped", tokens)
        logger.warning("%d tokens for %s (budget %s) dropped, never charged: %s", tokens,
                       label, item, why)

    def _ensure_payer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a run closed at shutdown): aclose drops it, counted
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._pay_until_settled(self._wake))

    async def _pay_until_settled(self, wake: asyncio.Event) -> None:
        while self._owed:
            try:
                await asyncio.wait_for(wake.wait(), self.retry_seconds)
            except TimeoutError:
                pass
            wake.clear()
            try:
                await self.settle()
            except Exception:  # not Redis's absence: keep it owed, say why, try again
                logger.exception("paying the unpaid token charges failed")
