"""Every run, recorded once it ends: one structured log line and the Prometheus metrics.

``run_callbacks(request, chain_name)`` is the one hook: every face adds what it returns
to its run's config ``callbacks`` (LangServe's routes through ``check_config``, the text
and WebSocket faces through ``Face.chunks``, resumable runs when they start one)::

    config = {**config, "callbacks": [*config.get("callbacks", []),
                                      *run_callbacks(request, "story")]}

It returns one ``RunRecorder`` (a langchain-core async callback handler), or nothing when
both the run log and the metrics are switched off. When a root run ends, the logger
``maritaca_chains.runs`` gets one JSON line::

    {"event": "run", "run_id": "...", "chain": "story", "chain_version": "87ff0734",
     "model": "sabia-4",
     "backend": "maritaca", "key": "key-1a2b3c4d", "outcome": "ok",
     "input_tokens": 7, "output_tokens": 12, "cached_input_tokens": 0, "calls": 1,
     "cost_brl": 0.000275, "time_to_first_token_s": 0.21, "duration_s": 1.9}

``chain_version`` is a short hash of the chain's file (which words answered);
``outcome`` is ``ok``, ``cancelled`` (the client left, or stopped the run) or the error
type of ``error_responses.describe_error``. ``key`` labels the access key that was used
(``key-`` and the first 8 hex digits of its SHA-256; ``none`` without access keys): never
the key. Per chunk, the recorder only notes the first token's time of each model call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.outputs import LLMResult
from starlette.requests import HTTPConnection

from . import metrics
from .error_responses import describe_error
from .security import caller_label
from .settings import ServerSettings
from .usage import RunUsage

__all__ = ["RunRecorder", "RunRecording", "run_callbacks"]

logger = logging.getLogger("maritaca_chains.runs")

_CANCELLED = (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt)


class RunRecording:
    """What the app records about its runs (``app.state.run_recording``): built once
    from the settings, it makes a ``RunRecorder`` per request."""

    def __init__(self, settings: ServerSettings, *, backend: str, model: str,
                 versions: dict[str, str] | None = None) -> None:
        self.backend, self.model = backend, model
        self.versions = versions or {}  # chain name -> its file's short hash
        self.log, self.metrics = settings.run_log, settings.metrics

    @property
    def enabled(self) -> bool:
        return self.log or self.metrics


def run_callbacks(connection: HTTPConnection, chain: str) -> list[BaseCallbackHandler]:
    """The callbacks that record a run of ``chain`` started by this request or WebSocket
    (empty when the app records nothing). Add them to the run's config."""
    recording: RunRecording | None = getattr(connection.app.state, "run_recording", None)
    if recording is None or not recording.enabled:
        return []
    return [RunRecorder(recording, chain, caller_label(connection))]


class _Run:
    __slots__ = ("first_token", "model", "started", "usage")

    def __init__(self, model: str) -> None:
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.model = model
        self.usage = RunUsage()


class RunRecorder(AsyncCallbackHandler):
    """Follows the root runs of one request (``/batch`` has several) and their model
    calls; logs and counts each root run when it ends."""

    run_inline = True  # awaited in place: no task per event (the per-chunk event included)
    ignore_retriever = ignore_agent = ignore_retry = ignore_custom_event = True

    def __init__(self, recording: RunRecording, chain: str, key: str) -> None:
        self.recording, self.chain, self.key = recording, chain, key
        self._runs: dict[UUID, _Run] = {}       # root run id -> its record
        self._root_of: dict[UUID, UUID] = {}    # every open run id -> its root's id
        self._before_first: dict[UUID, _Run] = {}  # model calls yet to stream a token

    # ------------------------------------------------------------------ run tree
    def _open(self, run_id: UUID, parent_run_id: UUID | None) -> _Run | None:
        if parent_run_id is None:
            self._runs[run_id] = _Run(self.recording.model)
            self._root_of[run_id] = run_id
            if self.recording.metrics:
                metrics.run_started(self.chain)
            return self._runs[run_id]
        root = self._root_of.get(parent_run_id)
        if root is None:
            return None
        self._root_of[run_id] = root
        return self._runs.get(root)

    async def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *,
                             run_id: UUID, parent_run_id: UUID | None = None,
                             **kwargs: Any) -> None:
        self._open(run_id, parent_run_id)

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._close(run_id, "ok")

    async def on_chain_error(self, error: BaseException, *, run_id: UUID,
                             **kwargs: Any) -> None:
        self._close(run_id, _outcome(error))

    async def on_chat_model_start(self, serialized: dict[str, Any] | None, messages: Any, *,
                                  run_id: UUID, parent_run_id: UUID | None = None,
                                  metadata: dict[str, Any] | None = None,
                                  **kwargs: Any) -> None:
        run = self._open(run_id, parent_run_id)
        if run is None:
            return
        params = kwargs.get("invocation_params") or {}
        model = (metadata or {}).get("ls_model_name") or params.get("model_name") \
            or params.get("model")
        if isinstance(model, str) and model:
            run.model = model
        if run.first_token is None:
            self._before_first[run_id] = run

    # The one per-chunk event: a plain function, which langchain-core calls in place for a
    # run_inline handler (no coroutine to create and await per chunk).
    def on_llm_new_token(self, token: str | list[str | dict[str, Any]], *,  # type: ignore[override]
                         run_id: UUID, **kwargs: Any) -> None:
        if self._before_first:  # else: one truth test per chunk, nothing more
            run = self._before_first.pop(run_id, None)
            if run is not None and run.first_token is None:
                run.first_token = time.perf_counter()

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._before_first.pop(run_id, None)
        root = self._root_of.get(run_id)
        if root is not None and (run := self._runs.get(root)) is not None:
            run.usage.add_result(response)
        self._close(run_id, "ok")

    async def on_llm_error(self, error: BaseException, *, run_id: UUID,
                           **kwargs: Any) -> None:
        self._before_first.pop(run_id, None)
        outcome = _outcome(error)
        if outcome != "cancelled" and self.recording.metrics:
            metrics.upstream_error(outcome)
        self._close(run_id, outcome)

    # ----------------------------------------------------------------- recording
    def _close(self, run_id: UUID, outcome: str) -> None:
        root = self._root_of.pop(run_id, None)
        if root != run_id:
            return  # a step of a run (or a run this recorder does not follow)
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        for other in [r for r, of in self._root_of.items() if of == run_id]:
            del self._root_of[other]  # steps a failure left open
        self._record(run_id, run, outcome)

    def _record(self, run_id: UUID, run: _Run, outcome: str) -> None:
        duration = time.perf_counter() - run.started
        ttft = None if run.first_token is None else run.first_token - run.started
        usage = run.usage
        if self.recording.metrics:
            metrics.run_ended(self.chain)
            metrics.record_run(self.chain, run.model, outcome, input_tokens=usage.input_tokens,
                               output_tokens=usage.output_tokens,
                               cached_input_tokens=usage.cached_input_tokens,
                               cost_brl=usage.cost_brl, time_to_first_token=ttft,
                               duration=duration)
        if self.recording.log and logger.isEnabledFor(logging.INFO):
            logger.info(json.dumps({
                "event": "run", "run_id": str(run_id), "chain": self.chain,
                "chain_version": self.recording.versions.get(self.chain),
                "model": run.model, "backend": self.recording.backend, "key": self.key,
                "outcome": outcome, **usage.as_dict(),
                "time_to_first_token_s": None if ttft is None else round(ttft, 4),
                "duration_s": round(duration, 4)}, ensure_ascii=False))


def _outcome(error: BaseException) -> str:
    if isinstance(error, _CANCELLED):
        return "cancelled"
    return str(describe_error(error)["type"])
