"""Per-key quotas: requests in a window and tokens in a budget, counted by ``limits``.

Use ``Quotas.from_settings(settings)`` once per app and put ``quota_guard(quotas)`` beside
the access guard on every route that runs a model. Each POST and each WebSocket handshake
is one request (``MARITACA_CHAINS_RATE_LIMIT``, moving window); the tokens a run used,
input + output, are charged to the key's budget (``MARITACA_CHAINS_TOKEN_BUDGET``, fixed
window: it counts what was spent even past the limit, and says when it starts again).
Over either: a 429 with ``Retry-After``, before any upstream call.

Both settings take the ``limits`` notation, a default and per-key overrides, the key named
by its last characters (``*`` then at least 4 of them, matching exactly one key)::

    MARITACA_CHAINS_RATE_LIMIT="60/minute, *a1b2=600/minute, *c3d4=none"
    MARITACA_CHAINS_TOKEN_BUDGET="200000/day, *a1b2=1000/minute;2000000/day"

``none`` exempts a key; ``;`` joins several limits. Without access keys, all callers
share one quota. Counts live in this process, or in Redis with
``MARITACA_CHAINS_REDIS_URL`` (every replica enforces the same counts).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from fastapi import HTTPException, Request
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from limits.storage import storage_from_string

from .messages import language
from .metrics import redis_unavailable
from .redis_outage import REDIS_DOWN, redis_unavailable_http
from .security import caller_label, key_label
from .settings import ServerSettings

__all__ = ["QuotaExceeded", "Quotas", "TokenMeter", "guarded", "parse_quota",
           "quota_guard", "request_meter"]

logger = logging.getLogger("maritaca_chains.server")

_NO_LIMIT = frozenset({"none", "unlimited", "off"})

# Every LangChain run started where this is set charges its tokens to that meter: set by
# the quota guard in the request's context, so LangServe routes, faces and background runs
# started by the request are all counted, however the run ends.
_current_meter: ContextVar[TokenMeter | None] = ContextVar("maritaca_chains_token_meter",
                                                           default=None)
register_configure_hook(_current_meter, inheritable=True)


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
class QuotaExceeded(Exception):
    """A key is over one of its limits: which one, and when it resets (epoch seconds)."""

    kind: str  # "requests" or "tokens"
    limit: RateLimitItem
    reset_at: float

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))

    def __str__(self) -> str:
        what = ("Rate limit" if self.kind == "requests" else "Token budget (input + output)")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.reset_at))
        return (f"{what} of {self.limit} for this access key reached; it resets at {when} "
                f"(in {self.retry_after} s)")

    def http(self) -> HTTPException:
        return HTTPException(429, str(self), headers={"Retry-After": str(self.retry_after)})


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

    async def admit(self, label: str) -> None:
        """Count one request for ``label``; raise QuotaExceeded if its budget is spent or
        its request limit reached (a refused request spends nothing)."""
        quota = self.of(label)
        for item in quota.tokens:
            if not await self.tokens.test(item, "tokens", label):
                stats = await self.tokens.get_window_stats(item, "tokens", label)
                raise QuotaExceeded("tokens", item, stats.reset_time)
        for item in quota.requests:
            if not await self.requests.hit(item, "requests", label):
                stats = await self.requests.get_window_stats(item, "requests", label)
                raise QuotaExceeded("requests", item, stats.reset_time)

    async def spend(self, label: str, tokens: int) -> None:
        """Charge ``tokens`` to ``label``'s budgets (counted even past the limit)."""
        if tokens > 0:
            for item in self.of(label).tokens:
                await self.tokens.hit(item, "tokens", label, cost=tokens)

    async def remaining_tokens(self, label: str) -> int | None:
        """What is left of the tightest token budget (None: no budget)."""
        left = [(await self.tokens.get_window_stats(item, "tokens", label)).remaining
                for item in self.of(label).tokens]
        return min(left) if left else None




class TokenMeter(AsyncCallbackHandler):
    """Charges every chat-model call's tokens to one key: the reported usage, or, for a
    call that failed or was cancelled before the usage arrived, an estimate (about four
    characters a prompt token, one token a streamed chunk)."""

    run_inline = True  # awaited in place: no task per streamed chunk

    def __init__(self, quotas: Quotas, label: str) -> None:
        self.quotas, self.label = quotas, label
        self._prompt: dict[UUID, int] = {}
        self._chunks: dict[UUID, int] = {}

    async def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, *,
                                  run_id: UUID, **kwargs: Any) -> None:
        chars = sum(len(str(m.content)) for batch in messages for m in batch)
        self._prompt[run_id] = math.ceil(chars / 4) + 4 * sum(len(b) for b in messages)

    async def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if token:
            self._chunks[run_id] = self._chunks.get(run_id, 0) + 1

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        await self._charge(run_id, response)

    async def on_llm_error(self, error: BaseException, *, run_id: UUID,
                           **kwargs: Any) -> None:
        # A hang-up reaches here inside a cancelled task, whose next await would be
        # cancelled too: charge in a task of its own so the tokens are never lost.
        charge = asyncio.get_running_loop().create_task(
            self._charge(run_id, kwargs.get("response")))
        _charging.add(charge)
        charge.add_done_callback(_charging.discard)

    async def _charge(self, run_id: UUID, response: LLMResult | None) -> None:
        prompt, chunks = self._prompt.pop(run_id, 0), self._chunks.pop(run_id, 0)
        used = _reported_tokens(response)
        await self.quotas.spend(self.label, used if used is not None else prompt + chunks)


_charging: set[asyncio.Task[None]] = set()  # charges under way (kept from the GC)


def _reported_tokens(response: LLMResult | None) -> int | None:
    """input + output tokens of the usage the model reported, if any."""
    total = None
    for generations in (response.generations if response else []):
        for generation in generations:
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if usage:
                total = (total or 0) + usage.get("input_tokens", 0) \
                    + usage.get("output_tokens", 0)
    return total


def request_meter() -> list[TokenMeter]:
    """The token meter the quota guard set for this request, as callbacks for a run that
    starts outside the request's context (a background run, which the guard's context
    does not reach); empty without quotas."""
    meter = _current_meter.get()
    return [meter] if meter is not None else []


def _counts(request: Request) -> bool:
    """A POST or a WebSocket handshake is a request that may run a model."""
    return request.method == "POST" or request.scope.get("type") == "websocket" \
        or request.headers.get("upgrade", "").lower() == "websocket"


def quota_guard(quotas: Quotas | None, *, fail_open: bool = False
                ) -> Callable[[Request], Awaitable[None]]:
    """A dependency (put it after the access guard): 429 when the caller's key is over a
    limit; otherwise the runs this request starts charge their tokens to the key. While
    the quotas' Redis is down: 503 (``redis_outage``), or served unchecked if
    ``fail_open`` (``MARITACA_CHAINS_REDIS_FAIL_OPEN``), logged and counted."""

    async def quota(request: Request) -> None:
        if quotas is None or not _counts(request):
            return
        label = caller_label(request)
        try:
            await quotas.admit(label)
        except QuotaExceeded as exc:
            raise exc.http() from None
        except REDIS_DOWN as exc:
            if not fail_open:
                logger.warning("quota check for %s refused: Redis is unavailable (%s)",
                               label, type(exc).__name__)
                raise redis_unavailable_http(language(request.headers)) from None
            logger.warning("quota check for %s skipped: Redis is unavailable (%s); served "
                           "(MARITACA_CHAINS_REDIS_FAIL_OPEN)", label, type(exc).__name__)
            redis_unavailable("served")
        _current_meter.set(TokenMeter(quotas, label))

    return quota


def guarded(access: Callable[[Request], Any], quotas: Quotas | None, *,
            fail_open: bool = False) -> Callable[[Request], Awaitable[None]]:
    """One dependency: the access guard, then the quota guard (for the faces, which take
    a single check: text, WebSocket handshakes, the UI)."""
    quota = quota_guard(quotas, fail_open=fail_open)

    async def check(request: Request) -> None:
        result = access(request)
        if inspect.isawaitable(result):
            await result
        await quota(request)

    return check
