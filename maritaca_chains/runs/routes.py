"""The HTTP face of resumable runs, beside each chain's LangServe routes.

``add_run_routes(app, chains, settings)`` adds, per chain, behind the request rules:

- ``POST /<chain>/runs``: LangServe's body (``{"input": ..., "config": {"configurable":
  ...}}``, the same checks and 422s) starts a run in the background: ``201 {"run_id",
  "stream_url", "status_url"}``; 503 when ``MARITACA_CHAINS_RUN_MAX_RUNS`` are in progress,
  429 when the caller's key already holds its share (``MARITACA_CHAINS_RUN_KEY_SHARE``).
- ``GET /<chain>/runs/<id>/stream``: the run as LangServe's ``/stream`` SSE events, each
  with an ``id:``; with ``Last-Event-ID`` (or ``?last_event_id=``) only the later ones,
  then live. 204 once a finished run has nothing more (which stops ``EventSource``).
- ``GET /<chain>/runs/<id>``: its status; ``DELETE``: cancel it (the upstream closes).

Unknown, expired and other keys' runs are 404.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, cast

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ValidationError

from ..error_responses import sse_error_data
from ..event_stream import EVENT_STREAM, ClosingEventStream
from ..messages import language
from ..redis_outage import REDIS_DOWN
from ..refusals import Refusal
from ..request_rules import (
    AdmittedCaller,
    Caller,
    CallerDep,
    parse_run_request,
    rules_of,
    takes_threads,
)
from ..settings import ServerSettings
from ..threads import check_thread
from .events import (
    RETRY_MS,
    EventsDropped,
    KeyRunsFull,
    RunInfo,
    RunsFull,
    RunStatus,
    dropped_block,
)
from .redis_store import RedisRunStore
from .runner import RunManager
from .store import MemoryRunStore, RunStore
from .wire import LangServeWire

__all__ = ["EVENT_STREAM", "add_run_routes", "store_for"]

logger = logging.getLogger("maritaca_chains.runs")

KEEP_ALIVE_SECONDS = 15.0  # a comment line on a quiet stream, so proxies keep it open
_RETRY = f"retry: {RETRY_MS}\r\n\r\n".encode()
_PING = b": ping\r\n\r\n"


def store_for(settings: ServerSettings) -> RunStore:
    """Redis Streams with ``MARITACA_CHAINS_REDIS_URL``, else this process's memory."""
    ttl, max_events, max_runs = (settings.run_ttl_seconds, settings.run_max_events,
                                 settings.run_max_runs)
    if settings.redis_url is not None:
        return RedisRunStore(settings.redis_url.get_secret_value(), ttl=ttl,
                             max_events=max_events, max_runs=max_runs,
                             max_per_owner=settings.runs_per_key,
                             heartbeat=min(1.0, settings.run_grace_seconds / 4))
    return MemoryRunStore(ttl=ttl, max_events=max_events, max_runs=max_runs,
                          max_per_owner=settings.runs_per_key)


def add_run_routes(app: FastAPI, chains: dict[str, Runnable[Any, Any]],
                   settings: ServerSettings) -> RunManager:
    """Add the run routes of every chain, behind the request rules (``request_rules``:
    every route needs the caller's key; starting a run, which spends, also its quota).
    The manager goes in the app's lifespan (``async with manager:``)."""
    manager = RunManager(store_for(settings), grace=settings.run_grace_seconds)
    for name, chain in chains.items():
        app.add_api_route(f"/{name}/runs", _start_endpoint(name, chain, manager),
                          methods=["POST"], status_code=201, tags=[name],
                          summary=f"Start a resumable {name} run")
        app.add_api_route(f"/{name}/runs/{{run_id}}/stream", _stream_endpoint(name, manager),
                          methods=["GET"], tags=[name],
                          response_class=StreamingResponse, response_model=None,
                          responses={200: {"content": {EVENT_STREAM: {}}}},
                          summary="Follow a run as SSE, resuming after Last-Event-ID")
        app.add_api_route(f"/{name}/runs/{{run_id}}", _status_endpoint(name, manager),
                          methods=["GET"], tags=[name], summary="A run's status")
        app.add_api_route(f"/{name}/runs/{{run_id}}", _cancel_endpoint(name, manager),
                          methods=["DELETE"], tags=[name],
                          summary="Cancel a run (its upstream request closes at once)")
    return manager


# ------------------------------------------------------------------------ starting

def _start_endpoint(name: str, chain: Runnable[Any, Any], manager: RunManager) -> Any:
    input_type = cast(type[BaseModel], chain.get_input_schema())
    config_type = chain.config_schema(include=["configurable"])
    threads = takes_threads(chain)  # else a thread_id is refused (422), not dropped

    async def start_run(request: Request, caller: AdmittedCaller) -> JSONResponse:
        try:  # the body guard (langserve_compat) has refused what is not JSON
            parsed = parse_run_request(await request.json(), input_type, config_type,
                                       bare=False, threads=threads)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                          for e in exc.errors(include_url=False)]) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        # the run's ledger: its log line, metrics, token charge and status usage
        ledger = rules_of(request).accounts.open(request, name)
        info = RunInfo(run_id=str(uuid.uuid4()), chain=name, owner=caller.label)
        await check_thread(chain, parsed.config, caller.label, language(request.headers))  # another key's: 404 now
        try:
            await manager.start(info, chain, parsed.value, parsed.config, ledger,
                                wire=LangServeWire(language(request.headers)))
        except KeyRunsFull as exc:
            raise Refusal(429, "key_runs_full", language(request.headers), why=exc,
                          headers={"Retry-After": "5"}) from exc
        except RunsFull as exc:
            raise Refusal(503, "runs_full", language(request.headers), why=exc,
                          headers={"Retry-After": "5"}) from exc
        public = info.public()
        status_url = f"/{name}/runs/{info.run_id}"
        return JSONResponse({"run_id": info.run_id, "stream_url": public["stream_url"],
                             "status_url": status_url}, status_code=201,
                            headers={"Location": status_url})

    start_run.__doc__ = (f"Start a {name} run in the background; read it at stream_url "
                         f"(SSE, resumable with Last-Event-ID). Body: as /{name}/stream.")
    return start_run


# ------------------------------------------------------------------------ the run

async def _own_run(manager: RunManager, name: str, run_id: str, caller: Caller,
                   request: Request) -> RunInfo:
    """The run, if it exists, is this chain's and belongs to the caller's key; else 404."""
    await manager.ensure_open()
    info = await manager.store.get(run_id)
    if info is None or info.chain != name or info.owner != caller.label:
        raise Refusal(404, "run_not_found", language(request.headers))
    return info


def _status_endpoint(name: str, manager: RunManager) -> Any:
    async def run_status(run_id: str, request: Request, caller: CallerDep) -> dict[str, Any]:
        return (await _own_run(manager, name, run_id, caller, request)).public()

    return run_status


def _cancel_endpoint(name: str, manager: RunManager) -> Any:
    async def cancel_run(run_id: str, request: Request, caller: CallerDep) -> dict[str, Any]:
        info = await _own_run(manager, name, run_id, caller, request)
        return (await manager.cancel_and_wait(run_id) or info).public()

    return cancel_run


def _last_event_id(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return 0
    try:
        after = int(raw)
    except ValueError:
        after = -1
    if after < 0:
        raise Refusal(422, "bad_last_event_id", language(request.headers))
    return after


def _stream_endpoint(name: str, manager: RunManager) -> Any:
    async def stream_run(run_id: str, request: Request, caller: CallerDep) -> Response:
        info = await _own_run(manager, name, run_id, caller, request)
        after = _last_event_id(request)
        if info.status is not RunStatus.RUNNING and after >= info.events:
            return Response(status_code=204)  # all read: tells EventSource to stop
        return ClosingEventStream(_events(manager.store, run_id, after),
                                 headers={"Cache-Control": "no-store"})

    return stream_run


async def _events(store: RunStore, run_id: str, after: int) -> AsyncIterator[bytes]:
    yield _RETRY
    try:
        async with aclosing(store.follow(run_id, after, idle=KEEP_ALIVE_SECONDS)) as batches:
            async for batch in batches:
                yield b"".join(batch) if batch else _PING
    except EventsDropped as exc:
        yield dropped_block(exc)
    except REDIS_DOWN as exc:  # named, and without an id: Last-Event-ID resumes later
        logger.warning("run %s: its reader was cut, Redis is unavailable (%s)", run_id,
                       type(exc).__name__)
        yield f"event: error\r\ndata: {sse_error_data(exc).decode()}\r\n\r\n".encode()
