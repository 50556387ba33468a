"""One ledger per run: its tokens, BRL cost, outcome, time to first token and duration,
counted once and read by everything that needs them.

A run's ``RunLedger`` is filled by the callbacks of the request that started it and, when
the run ends, closed once: that writes the run log line (logger ``maritaca_chains.runs``),
updates the Prometheus metrics and charges the tokens to the caller's key (quotas). The
faces read the same ledger for what they show (the ``[TRUNCATED]`` note, the UI's footer,
a resumable run's ``usage``). ``RunAccounts`` (one per app, ``app.state.accounts``) makes
them. A face uses it in a few lines::

    accounts = app.state.accounts
    await accounts.admit(request)                 # a request's quota: 429 if spent
    ledger = accounts.open(request, "story")      # follows the runs this request starts
    async for chunk in chain.astream(value, ledger.config(config)):
        ...
    run = ledger.last                             # the run's RunLedger, closed
    run.cut, run.max_tokens, run.usage(), run.cost_brl, run.outcome

(``admit`` and ``open`` take the request or WebSocket; request_rules' dependencies call
``admit`` for the routes they guard.) One request may start several runs (LangServe's
``/batch``): each root run gets its own ledger, in ``ledger.runs`` in the order they end.

The log line::

    {"event": "run", "run_id": "...", "chain": "story", "chain_version": "87ff0734",
     "model": "sabia-4", "backend": "maritaca", "key": "key-1a2b3c4d", "outcome": "ok",
     "input_tokens": 7, "output_tokens": 12, "cached_input_tokens": 0, "calls": 1,
     "cost_brl": 0.000275, "time_to_first_token_s": 0.21, "duration_s": 1.9}

``chain_version`` is a short hash of the chain's file (which words answered); ``outcome``
is ``ok``, ``cancelled`` (the client left, or stopped the run) or the error type of
``error_responses.describe_error``. ``key`` labels the access key (never the key).
The cost of a call is its ``response_metadata["cost_brl"]`` (ChatMaritaca prices every
call), else the catalogue's price for its model name; a call whose model has no price
makes the run's cost unknown (None), never a guess. Tokens charged to a quota are the
reported usage, or for a call that failed before reporting it an estimate (about four
characters a prompt token, one token a streamed chunk). Per chunk, the handler does one
attribute increment and one truth test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.runnables import RunnableConfig
from starlette.requests import HTTPConnection

from maritaca.models import price_usage

from . import metrics
from .error_responses import describe_error
from .messages import DEFAULT_LANGUAGE, Language, say
from .quotas import Quotas
from .security import NO_KEY, caller_label
from .settings import ServerSettings

__all__ = ["Ledger", "RunAccounts", "RunLedger", "format_brl"]

logger = logging.getLogger("maritaca_chains.runs")

_CANCELLED = (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt)


def format_brl(value: float | None) -> str:
    """A cost for people, in Brazilian notation, every significant digit kept:
    ``R$ 0,000265``, ``R$ 1.234,50``; ``sem preço`` for None."""
    if value is None:
        return "sem preço"
    whole, _, fraction = f"{value:.8f}".rstrip("0").partition(".")
    return f"R$ {int(whole):,}".replace(",", ".") + "," + fraction.ljust(2, "0")


class RunLedger:
    """One run's account (see the module docstring). Read it once ``outcome`` is set."""

    __slots__ = ("answered_by", "cached_input_tokens", "calls", "chain", "cost_known", "cost_sum",
                 "duration", "estimated_tokens", "finish_reason", "first_token", "input_tokens",
                 "key", "max_tokens", "model", "outcome", "output_tokens", "run_id", "started")

    def __init__(self, run_id: UUID, chain: str, key: str, model: str) -> None:
        self.run_id, self.chain, self.key = run_id, chain, key
        self.model = model  # the model asked for (the metrics' label)
        self.answered_by: str | None = None  # the server's name for it (may be dated)
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.duration: float | None = None
        self.outcome: str | None = None  # set once, when the run ends
        self.calls = self.input_tokens = self.output_tokens = self.cached_input_tokens = 0
        self.estimated_tokens = 0  # calls that ended without usage: an estimate
        self.cost_sum = 0.0
        self.cost_known = True  # until a call with usage but no price
        self.finish_reason: str | None = None  # of the last model call
        self.max_tokens: int | None = None     # the limit that call ran with

    # --------------------------------------------------------------------- reading
    @property
    def cost_brl(self) -> float | None:
        """The run's cost in BRL; None when a call had no price (or none reported usage)."""
        if not self.cost_known or not (self.input_tokens or self.output_tokens):
            return None
        return round(self.cost_sum, 8)

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    @property
    def tokens(self) -> int:
        """Input + output tokens the model reported (what the UI shows)."""
        return self.input_tokens + self.output_tokens

    @property
    def charged_tokens(self) -> int:
        """What the run costs its key's token budget: reported usage plus estimates."""
        return self.tokens + self.estimated_tokens

    @property
    def cut(self) -> bool:
        """The answer (the last model call's) stopped at the token limit."""
        return self.finish_reason == "length"

    def cut_note(self, lang: Language = DEFAULT_LANGUAGE) -> str:
        """What the text faces say after a cut answer: the limit, and how to raise it."""
        limit = f"max_tokens={self.max_tokens}" if self.max_tokens else "max_tokens"
        return say("truncated", lang, limit=limit)

    def usage(self) -> dict[str, Any]:
        """``{"input_tokens", "output_tokens", "total_tokens", "cached_input_tokens",
        "calls", "cost_brl"}``: the run log's fields and a resumable run's ``usage``."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "total_tokens": self.tokens, "cached_input_tokens": self.cached_input_tokens,
                "calls": self.calls, "cost_brl": self.cost_brl}

    def log_line(self, backend: str, chain_version: str | None = None) -> dict[str, Any]:
        ttft = self.time_to_first_token
        usage = self.usage()
        del usage["total_tokens"]
        return {"event": "run", "run_id": str(self.run_id), "chain": self.chain,
                "chain_version": chain_version, "model": self.model, "backend": backend, "key": self.key,
                "outcome": self.outcome, **usage,
                "time_to_first_token_s": None if ttft is None else round(ttft, 4),
                "duration_s": None if self.duration is None else round(self.duration, 4)}

    # --------------------------------------------------------------------- writing
    def add_call(self, result: LLMResult | None, *, max_tokens: int | None,
                 estimate: int, failed: bool = False) -> None:
        """Count one model call that ended (``calls`` counts those that did not fail;
        ``estimate``: its tokens if it reported none)."""
        self.calls += not failed
        reported = False
        for generations in (result.generations if result else []):
            for generation in generations[:1]:  # the first carries the usage
                message = getattr(generation, "message", None)
                metadata: Mapping[str, Any] = getattr(message, "response_metadata", None) or {}
                self.answered_by = metadata.get("model_name") or self.answered_by
                reason = metadata.get("finish_reason") or (
                    generation.generation_info or {}).get("finish_reason")
                if reason:
                    self.finish_reason, self.max_tokens = reason, max_tokens
                reported = self._add_usage(getattr(message, "usage_metadata", None),
                                           metadata) or reported
        if not reported:
            self.estimated_tokens += estimate

    def _add_usage(self, usage: Mapping[str, Any] | None, metadata: Mapping[str, Any]) -> bool:
        if not usage:
            return False
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)
        self.cached_input_tokens += int(
            (usage.get("input_token_details") or {}).get("cache_read") or 0)
        cost = metadata["cost_brl"] if "cost_brl" in metadata else price_usage(
            usage, metadata.get("model_name"), metadata.get("model"))
        total = cost.get("total") if isinstance(cost, Mapping) else None
        if isinstance(total, int | float):
            self.cost_sum += total
        else:
            self.cost_known = False
        return True


class RunAccounts:
    """The app's bookkeeping (``app.state.accounts``): opens ledgers, admits requests
    against the quotas, and records every run once it ends."""

    def __init__(self, *, backend: str, model: str, quotas: Quotas | None,
                 log: bool = True, metrics: bool = True,
                 versions: dict[str, str] | None = None) -> None:
        self.backend, self.model, self.quotas = backend, model, quotas
        self.log, self.metrics = log, metrics
        self.versions = versions or {}  # chain name -> its file's short hash

    @classmethod
    def from_settings(cls, settings: ServerSettings, *, backend: str, model: str,
                      quotas: Quotas | None, versions: dict[str, str] | None = None
                      ) -> RunAccounts:
        """The app's accounts: the run log and metrics as the settings say."""
        return cls(backend=backend, model=model, quotas=quotas, log=settings.run_log,
                   metrics=settings.metrics, versions=versions)

    def open(self, connection: HTTPConnection | None, chain: str) -> Ledger:
        """The callbacks that keep the ledgers of the runs of ``chain`` this request or
        WebSocket starts (add them with ``ledger.config(config)``); without a
        connection, the runs are nobody's key (``security.NO_KEY``)."""
        return Ledger(self, chain, NO_KEY if connection is None else caller_label(connection))

    async def admit(self, connection: HTTPConnection, runs: int = 1) -> None:
        """Count ``runs`` requests against the caller's quota (0: only check there is room);
        raises ``quotas.QuotaExceeded`` (before any upstream call) when a limit is reached."""
        if self.quotas is not None:
            await self.quotas.admit(caller_label(connection), runs)

    def started(self, run: RunLedger) -> None:
        if self.metrics:
            metrics.run_started(run.chain)

    async def record(self, run: RunLedger) -> None:
        """The run ended: metrics, the log line, and its tokens charged to its key."""
        if self.metrics:
            metrics.run_ended(run.chain)
            metrics.record_run(run.chain, run.model, run.outcome or "ok",
                               input_tokens=run.input_tokens, output_tokens=run.output_tokens,
                               cached_input_tokens=run.cached_input_tokens,
                               cost_brl=run.cost_brl,
                               time_to_first_token=run.time_to_first_token,
                               duration=run.duration or 0.0)
        if self.log and logger.isEnabledFor(logging.INFO):
            logger.info(json.dumps(run.log_line(self.backend, self.versions.get(run.chain)),
                                   ensure_ascii=False))
        if self.quotas is not None and run.charged_tokens:
            # while Redis is down the charge is kept and paid later (unpaid_charges)
            await self.quotas.spend(run.key, run.charged_tokens)

    async def aclose(self) -> None:
        """At shutdown: the token charges still owed get their last try (quotas)."""
        if self.quotas is not None:
            await self.quotas.aclose()


class _Call:
    __slots__ = ("ledger", "max_tokens", "prompt", "chunks_at_start")

    def __init__(self, ledger: RunLedger, max_tokens: int | None, prompt: int,
                 chunks_at_start: int) -> None:
        self.ledger, self.max_tokens, self.prompt = ledger, max_tokens, prompt
        self.chunks_at_start = chunks_at_start


class Ledger(AsyncCallbackHandler):
    """The callbacks of one request (or WebSocket run): a ``RunLedger`` per root run,
    closed and recorded when it ends. Add it to the run's config (``config``)."""

    run_inline = True  # awaited in place: no task per event (the per-chunk event included)
    ignore_retriever = ignore_agent = ignore_retry = ignore_custom_event = True

    def __init__(self, accounts: RunAccounts, chain: str, key: str) -> None:
        self.accounts, self.chain, self.key = accounts, chain, key
        self.runs: list[RunLedger] = []         # closed, in the order they ended
        self._open: dict[UUID, RunLedger] = {}  # root run id -> its ledger
        self._root_of: dict[UUID, UUID] = {}    # every open run id -> its root's id
        self._calls: dict[UUID, _Call] = {}     # model calls in progress
        self._before_first: dict[UUID, RunLedger] = {}  # calls yet to stream a token
        self._chunks = 0  # chunks streamed by this request's model calls
        # told of each root run's failure before it is recorded (LangServe's routes:
        # ``error_events`` names the cause in the error event); None: nobody asks
        self.on_root_error: Callable[[UUID, BaseException], None] | None = None

    @property
    def ends_in_place(self) -> bool:
        """Whether its end callbacks never wait (``maritaca.run_end``): a run's record
        waits only to charge its tokens to a quota."""
        return self.accounts.quotas is None

    @property
    def last(self) -> RunLedger | None:
        """The run that ended last (a face's one run)."""
        return self.runs[-1] if self.runs else None

    def config(self, config: RunnableConfig | None = None) -> RunnableConfig:
        """``config`` with this ledger among its callbacks."""
        callbacks = (config or {}).get("callbacks")
        return {**(config or {}),
                "callbacks": [*(callbacks if isinstance(callbacks, list) else []), self]}

    # ------------------------------------------------------------------ run tree
    def _ledger(self, run_id: UUID, parent_run_id: UUID | None) -> RunLedger | None:
        if parent_run_id is None:
            run = self._open[run_id] = RunLedger(run_id, self.chain, self.key,
                                                 self.accounts.model)
            self._root_of[run_id] = run_id
            self.accounts.started(run)
            return run
        root = self._root_of.get(parent_run_id)
        if root is None:
            return None
        self._root_of[run_id] = root
        return self._open.get(root)

    async def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *,
                             run_id: UUID, parent_run_id: UUID | None = None,
                             **kwargs: Any) -> None:
        self._ledger(run_id, parent_run_id)

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        await self._close(run_id, "ok")

    async def on_chain_error(self, error: BaseException, *, run_id: UUID,
                             parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        if parent_run_id is None and self.on_root_error is not None:
            self.on_root_error(run_id, error)
        await self._close(run_id, _outcome(error))

    async def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: Any, *,
                                  run_id: UUID, parent_run_id: UUID | None = None,
                                  metadata: dict[str, Any] | None = None,
                                  **kwargs: Any) -> None:
        run = self._ledger(run_id, parent_run_id)
        if run is None:
            return
        params = kwargs.get("invocation_params") or {}
        model = (metadata or {}).get("ls_model_name") or params.get("model_name") \
            or params.get("model")
        if isinstance(model, str) and model:
            run.model = model
        limit = params.get("max_tokens")
        chars = sum(len(str(m.content)) for batch in messages for m in batch)
        prompt = math.ceil(chars / 4) + 4 * sum(len(batch) for batch in messages)
        self._calls[run_id] = _Call(run, limit if isinstance(limit, int) else None, prompt,
                                    self._chunks)
        if run.first_token is None:
            self._before_first[run_id] = run

    # The one per-chunk event: a plain function, which langchain-core calls in place for a
    # run_inline handler (no coroutine to create and await per chunk).
    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], *,  # type: ignore[override]
                         run_id: UUID, **kwargs: Any) -> None:
        self._chunks += 1
        if self._before_first:  # else: one truth test per chunk, nothing more
            run = self._before_first.pop(run_id, None)
            if run is not None and run.first_token is None:
                run.first_token = time.perf_counter()

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._end_call(run_id, response, failed=False)
        await self._close(run_id, "ok")

    async def on_llm_error(self, error: BaseException, *, run_id: UUID,
                           **kwargs: Any) -> None:
        self._end_call(run_id, kwargs.get("response"), failed=True)
        outcome = _outcome(error)
        if outcome != "cancelled" and self.accounts.metrics:
            metrics.upstream_error(outcome)
        await self._close(run_id, outcome)

    def _end_call(self, run_id: UUID, response: LLMResult | None, *, failed: bool) -> None:
        self._before_first.pop(run_id, None)
        call = self._calls.pop(run_id, None)
        if call is not None:
            call.ledger.add_call(response, max_tokens=call.max_tokens,
                                 estimate=call.prompt + self._chunks - call.chunks_at_start,
                                 failed=failed)

    # ----------------------------------------------------------------- closing
    async def _close(self, run_id: UUID, outcome: str) -> None:
        root = self._root_of.pop(run_id, None)
        if root != run_id:
            return  # a step of a run (or a run this ledger does not follow)
        run = self._open.pop(run_id, None)
        if run is None:
            return
        for other in [r for r, of in self._root_of.items() if of == run_id]:
            del self._root_of[other]  # steps a failure left open
        run.outcome, run.duration = outcome, time.perf_counter() - run.started
        self.runs.append(run)
        if outcome == "cancelled":
            # inside a cancelled task the next await would be cancelled too: record in a
            # task of its own so the tokens are never lost
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a run abandoned at shutdown, closed by the GC
                return
            task = loop.create_task(self.accounts.record(run))
            _recording.add(task)
            task.add_done_callback(_recording.discard)
        else:
            await self.accounts.record(run)


_recording: set[asyncio.Task[None]] = set()  # records under way (kept from the GC)


def _outcome(error: BaseException) -> str:
    if isinstance(error, _CANCELLED):
        return "cancelled"
    return str(describe_error(error)["type"])
