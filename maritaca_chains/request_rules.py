"""The rules every run request follows, on every face, as typed FastAPI dependencies.

Modelled on the FastAPI full-stack template's ``api/deps.py``: a route declares what it
needs and gets it checked::

    async def text(request: Request, caller: AdmittedCaller) -> ...:   # key + quota
    async def status(request: Request, caller: CallerDep) -> ...:      # key only

- ``CallerDep``: who calls. The access guard (``security.access_guard``: an access key,
  the login cookie, or a loopback address) passes, and ``Caller.label`` names the key
  (``security.key_label``; ``none`` on a server without keys). 401/403 otherwise.
- ``AdmittedCaller``: the caller, with room in its quotas for the runs this request
  starts (429 with ``Retry-After`` otherwise, before any upstream call; 503 while the
  quotas' Redis is down, unless ``MARITACA_CHAINS_REDIS_FAIL_OPEN``): a POST is one
  run, a ``/batch`` one per input (at most ``MARITACA_CHAINS_BATCH_MAX_INPUTS``: 413
  beyond). GETs start no run and are not counted. A WebSocket is checked at the
  handshake (``admit_socket``) and each of its runs counts when it starts.
- ``parse_run_request``: the ``{"input", "config": {"configurable": ...}}`` envelope (or
  the bare input, where a face allows it) and the ``configurable`` policy
  (``check_configurable``: only ``model``, ``temperature``, ``max_tokens``, in range, and
  ``thread_id`` for a conversation chain).
- The JSON content type is checked before any route by ``request_guards`` (415), with
  ``media_types.is_json``: the one comparison.

``RequestRules`` (one per app, built in ``app.create_app``) is what the dependencies
consult; its ``middleware`` puts it in every request's scope, so it also reaches apps
mounted inside (the Gradio UI).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, WebSocket
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from chains import CONFIGURABLE_KEYS, MAX_TOKENS_RANGE, TEMPERATURE_RANGE

from .ledger import RunAccounts
from .messages import language
from .metrics import redis_unavailable
from .quotas import QuotaExceeded
from .redis_outage import REDIS_DOWN, redis_unavailable_http
from .request_guards import cross_site_refusal
from .security import caller_label

__all__ = ["THREAD_ID_REFUSED", "AdmittedCaller", "Caller", "CallerDep", "RequestRules",
           "RunRequest", "admit_socket", "admitted_caller", "check_configurable",
           "current_caller", "parse_run_request", "rules_of", "socket_access_refusal",
           "takes_threads"]

logger = logging.getLogger("maritaca_chains.server")

_RULES_IN_SCOPE = "maritaca_chains.request_rules"
ENVELOPE_KEYS = frozenset({"input", "config"})


# what ``RequestRules.admit`` refuses a run with
_REFUSALS: tuple[type[Exception], ...] = (QuotaExceeded, *REDIS_DOWN)


class RequestRules:
    """What the dependencies check against: the access guard, the run accounts (quotas)
    and the ``/batch`` size cap."""

    def __init__(self, access: Callable[[Request], Awaitable[None]], accounts: RunAccounts,
                 *, batch_max_inputs: int, redis_fail_open: bool = False) -> None:
        self.access, self.accounts, self.batch_max_inputs = access, accounts, batch_max_inputs
        self.redis_fail_open = redis_fail_open

    async def admit(self, connection: HTTPConnection, runs: int = 1) -> None:
        """Room in the caller's quotas for ``runs`` runs (``RunAccounts.admit``; 0: check
        only). Raises ``QuotaExceeded``, or ``redis_outage.REDIS_DOWN`` while the quotas'
        Redis is down, unless ``MARITACA_CHAINS_REDIS_FAIL_OPEN``: then served
        unchecked, logged and counted."""
        try:
            await self.accounts.admit(connection, runs)
        except REDIS_DOWN as exc:
            label = caller_label(connection)
            if not self.redis_fail_open:
                logger.warning("quota check for %s refused: Redis is unavailable (%s)",
                               label, type(exc).__name__)
                raise
            logger.warning("quota check for %s skipped: Redis is unavailable (%s); served "
                           "(MARITACA_CHAINS_REDIS_FAIL_OPEN)", label, type(exc).__name__)
            redis_unavailable("served")

    async def refusal(self, connection: HTTPConnection, runs: int = 1) -> Exception | None:
        """``admit``, with its refusal (``QuotaExceeded``, or Redis' error while it is
        down) returned rather than raised, for a face that says it in its own words;
        None: admitted."""
        try:
            await self.admit(connection, runs)
        except _REFUSALS as exc:
            return exc
        return None

    async def admit_http(self, connection: HTTPConnection, runs: int) -> None:
        """``admit``, its refusals as HTTPException: 429 with ``Retry-After``, or the
        named 503 (also inside mounted apps, which lack the app's handlers)."""
        try:
            await self.admit(connection, runs)
        except QuotaExceeded as exc:
            raise exc.http(language(connection.headers)) from None
        except REDIS_DOWN:
            raise redis_unavailable_http(language(connection.headers)) from None

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """``app``, with these rules in every request's scope (see ``rules_of``)."""

        async def with_rules(scope: Scope, receive: Receive, send: Send) -> None:
            scope[_RULES_IN_SCOPE] = self
            await app(scope, receive, send)

        return with_rules


def rules_of(connection: HTTPConnection) -> RequestRules:
    """The app's rules, from the request or WebSocket."""
    rules: RequestRules | None = connection.scope.get(_RULES_IN_SCOPE)
    if rules is None:
        raise RuntimeError("RequestRules.middleware is not installed on this app")
    return rules


# ---------------------------------------------------------------------- who calls

@dataclass(frozen=True)
class Caller:
    """An admitted caller: ``label`` names its access key, never the key itself."""

    label: str


async def current_caller(request: Request) -> Caller:
    """The access guard (401/403), then the caller's label."""
    await rules_of(request).access(request)
    return Caller(caller_label(request))


CallerDep = Annotated[Caller, Depends(current_caller)]


async def _runs_in(request: Request, rules: RequestRules) -> int:
    """How many runs this request starts: 0 for a GET, the inputs of a ``/batch``."""
    if request.method != "POST":
        return 0
    if not request.scope["path"].endswith("/batch"):  # not request.url: built per call
        return 1
    try:
        body = await request.json()
    except ValueError:
        return 1  # the route answers its own 422
    inputs = body.get("inputs") if isinstance(body, dict) else None
    count = len(inputs) if isinstance(inputs, list) else 1
    if count > rules.batch_max_inputs:
        raise HTTPException(413, f"A batch may hold at most {rules.batch_max_inputs} inputs "
                                 f"(this one has {count}): split it, or raise "
                                 f"MARITACA_CHAINS_BATCH_MAX_INPUTS")
    return max(count, 1)


async def admitted_caller(request: Request, caller: CallerDep) -> Caller:
    """The caller, once its quotas admitted the runs this request starts (429 if not)."""
    rules = rules_of(request)
    if runs := await _runs_in(request, rules):
        await rules.admit_http(request, runs)
    return caller


AdmittedCaller = Annotated[Caller, Depends(admitted_caller)]


async def admit(request: Request) -> Caller:
    """``admitted_caller`` (the key, then the quotas) as one plain call: for a route that
    guards itself, without FastAPI's dependency solving (``Depends(admit)`` elsewhere)."""
    return await admitted_caller(request, await current_caller(request))


async def admit_socket(ws: WebSocket) -> Caller:
    """A WebSocket handshake: the same origin rule as HTTP (browsers apply no CORS to
    WebSockets), the access guard, and room in the quotas for one run (checked, not
    counted: each run counts when it starts). Raises HTTPException."""
    if why := cross_site_refusal(ws.scope, lang=language(ws.headers)):
        raise HTTPException(403, why)
    rules = rules_of(ws)
    await rules.access(Request({**ws.scope, "type": "http", "method": "GET"}))
    await rules.admit_http(ws, 0)
    return Caller(caller_label(ws))


async def socket_access_refusal(ws: WebSocket) -> HTTPException | None:
    """The access guard asked again for an open WebSocket, before each of its runs: a
    login session that expired or was logged out (or whose key was removed) stops the
    socket's runs as it stops HTTP requests. None: still let in."""
    try:
        await rules_of(ws).access(Request({**ws.scope, "type": "http", "method": "GET"}))
    except HTTPException as exc:
        return exc
    return None


# ---------------------------------------------------------------- what is asked

THREAD_ID_REFUSED = ("thread_id names a conversation: only conversation chains (history: "
                     "thread, e.g. chat) take it; this chain answers each request alone, "
                     "remove thread_id")


def takes_threads(chain: Runnable[Any, Any]) -> bool:
    """Whether ``chain`` runs in a conversation (its config offers ``thread_id``)."""
    return any(spec.id == "thread_id" for spec in chain.config_specs)


def check_configurable(configurable: dict[str, Any], *, threads: bool = True) -> None:
    """The client-config policy: only ``CONFIGURABLE_KEYS`` (never ``api_key``,
    ``base_url``...), and values in range; ``threads=False`` (a chain without history):
    no ``thread_id`` either, rather than dropping it. Raises ValueError naming what is
    refused."""
    if refused := sorted(set(configurable) - CONFIGURABLE_KEYS):
        raise ValueError(f"config.configurable may only set "
                         f"{sorted(CONFIGURABLE_KEYS)}; refused: {refused}")
    if not threads and configurable.get("thread_id"):
        raise ValueError(THREAD_ID_REFUSED)
    low, high = TEMPERATURE_RANGE
    temperature = configurable.get("temperature")
    if temperature is not None and not (isinstance(temperature, int | float)
                                        and not isinstance(temperature, bool)
                                        and low <= temperature <= high):
        raise ValueError(f"config.configurable.temperature must be {low:g} to {high:g}")
    low_t, high_t = MAX_TOKENS_RANGE
    max_tokens = configurable.get("max_tokens")
    if isinstance(max_tokens, float) and max_tokens.is_integer():
        # JSON has one number type: 300.0 is the integer 300 (as the schema says)
        max_tokens = configurable["max_tokens"] = int(max_tokens)
    if max_tokens is not None and not (isinstance(max_tokens, int)
                                       and not isinstance(max_tokens, bool)
                                       and (low_t <= max_tokens <= high_t or max_tokens == 0)):
        raise ValueError(f"config.configurable.max_tokens must be {low_t} to {high_t} "
                         f"(or 0: the chain's own budget)")


@dataclass
class RunRequest:
    """A parsed run request: the chain input and the run's config (``configurable`` only)."""

    value: BaseModel
    config: RunnableConfig


def parse_run_request(data: Any, input_type: type[BaseModel], config_type: type[BaseModel],
                      *, bare: bool = True, threads: bool = True) -> RunRequest:
    """``{"input": ..., "config": {"configurable": {...}}}`` (LangServe's envelope) or,
    where ``bare``, the input alone. Raises pydantic's ValidationError with locations as
    in the JSON (``("config", "configurable", "model")``), or ValueError naming the
    problem. ``threads=False``: the chain takes no ``thread_id`` (``check_configurable``)."""
    if isinstance(data, dict) and "input" in data and set(data) <= ENVELOPE_KEYS:
        return RunRequest(_validate(input_type, data["input"], ("input",)),
                          _config(data.get("config"), config_type, threads))
    if not bare:
        if not isinstance(data, dict) or "input" not in data:
            raise ValidationError.from_exception_data("RunRequest", [
                {"type": "missing", "loc": ("input",), "input": data}])
        extra = sorted(set(data) - ENVELOPE_KEYS)
        raise ValidationError.from_exception_data("RunRequest", [
            {"type": "extra_forbidden", "loc": (name,), "input": data[name]}
            for name in extra])
    return RunRequest(input_type.model_validate(data), {})


def _config(config: Any, config_type: type[BaseModel], threads: bool = True) -> RunnableConfig:
    if config is None:
        return {}
    if not isinstance(config, dict) or set(config) - {"configurable"}:
        raise ValueError('config may only be {"configurable": {...}} '
                         "(model, temperature, max_tokens)")
    configurable = config.get("configurable")
    configurable = {} if configurable is None else configurable  # false, 0, []: refused
    if not isinstance(configurable, dict):
        raise ValueError("config.configurable must be an object")
    check_configurable(configurable, threads=threads)
    _validate(config_type, {"configurable": configurable}, ("config",))
    return {"configurable": dict(configurable)} if configurable else {}


def _validate(model: type[BaseModel], data: Any, where: tuple[str, ...]) -> BaseModel:
    """``model.model_validate(data)``, its error locations prefixed with ``where``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationError.from_exception_data(exc.title, [
            {**e, "loc": (*where, *e["loc"])}  # type: ignore[typeddict-item]
            for e in exc.errors(include_url=False)]) from None
