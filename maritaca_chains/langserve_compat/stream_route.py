"""``/<chain>/stream`` for the requests nearly every client sends (``{"input": ...}``, no
``config`` or an empty one), answered with exactly the bytes LangServe's handler sends,
for less work per request; everything else goes to LangServe's own handler.

LangServe's ``/stream`` validates every request's config against a pydantic model built
from the chain's config schema, dumps it back, merges it three times, asks the chain for
its input schema under that config (a new binding each time) and adds an event aggregator
it never reads (``served_chain``): up to 0.25 ms of a short request's 3-4 ms in one
process, within noise deployed (BENCHMARKS.md, issue 26, sixth pass). With no config to
validate, none of that changes what the run gets, so this route does the rest itself:

- the same guard (the key and the quotas), called in place where LangServe's routes
  have it as a dependency (FastAPI's dependency solving cost a short request 1.7% of
  its instructions: BENCHMARKS.md, issue 26, fourteenth pass), then the same per-request hook
  (``config_hook``: the ledger, which also keeps a failed run for the error event, in
  the run's callbacks);
- the same config as ``langserve.api_handler._update_config_with_defaults`` makes
  (``run_name`` = the route's base path, the ``__useragent``, ``__langserve_version`` and
  ``__langserve_endpoint`` metadata, a fresh ``run_id``), pinned by a test against it;
- the input validated by the chain's own input schema and unpacked as LangServe does;
- the same events (``metadata`` before the first chunk, ``data`` per chunk through
  LangServe's serializer, ``end``; on an error LangServe's generic ``error`` event and the
  exception re-raised) in sse-starlette's ``EventSourceResponse``, as LangServe sends them
  (``sse_response.LeanEventSourceResponse``: the same response, two plain tasks instead
  of an anyio task group of four).

A body that is not JSON, not an object, without ``input``, with a config, or whose input
does not validate is handed to LangServe's handler unchanged: its errors (422 and their
details) stay LangServe's. It is not installed when LangServe runs as "hosted" (its
extra metadata) or when the chain's input schema depends on its config.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from langchain_core.load.serializable import Serializable
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import merge_configs
from langchain_core.runnables.configurable import DynamicRunnable
from langserve import CustomUserType
from langserve import __version__ as langserve_version
from langserve.serialization import WellKnownLCSerializer
from langserve.validation import StreamEventsParameters
from pydantic import BaseModel, RootModel, ValidationError
from starlette.routing import Route

from chains.events import astream_events, in_place

from .sse_response import LeanEventSourceResponse

__all__ = ["Guard", "add_stream_route", "defaults", "unpacked"]

Hook = Callable[[dict[str, Any], Request], Awaitable[dict[str, Any]]]
Guard = Callable[[Request], Awaitable[Any]]  # raises to refuse the request
FILTERS = ("include_names", "include_types", "include_tags",
           "exclude_names", "exclude_types", "exclude_tags")
_FILTER_KEYS = frozenset(FILTERS)
_ERROR = json.dumps({"status_code": 500, "message": "Internal Server Error"})
# LangServe's responses use sse-starlette's separator; a ``data`` event is sent already
# encoded (the same bytes as the dict ``{"event": "data", "data": json}`` gives: JSON
# from ``orjson`` has no line breaks), without a decode and an encode per event
_SEP = "\r\n"
_DATA, _END_DATA = f"event: data{_SEP}data: ".encode(), f"{_SEP}{_SEP}".encode()


def defaults(config: dict[str, Any], *, run_name: str, user_agent: str | None,
             endpoint: str) -> RunnableConfig:
    """``config`` (what the hook returned) with what LangServe's handler adds to every
    run's config (not hosted)."""
    metadata = {"__useragent": user_agent, "__langserve_version": langserve_version,
                "__langserve_endpoint": endpoint}
    # LangServe merges ({}, config, these): the empty config first changes nothing
    merged = merge_configs(cast(RunnableConfig, config),
                           {"metadata": metadata, "run_name": run_name})
    if merged.get("run_id") is None:
        merged["run_id"] = str(uuid.uuid4())  # type: ignore[typeddict-item]
    return merged


def unpacked(validated: Any) -> Any:
    """The chain's input from its validated model, as LangServe unpacks it: the models
    validation made become dicts again, recursively; LangChain objects stay."""
    model = validated.root if isinstance(validated, RootModel) else validated
    if isinstance(model, BaseModel) and not isinstance(model, (Serializable, CustomUserType)):
        return {field: unpacked(getattr(model, field)) for field in type(model).model_fields}
    return model


def _fast_input(body: Any, schema: Any) -> tuple[bool, Any]:
    """(True, the chain's input) when this route can answer ``body`` itself."""
    if type(body) is not dict or "input" not in body:
        return False, None
    config = body.get("config", {})
    if type(config) is not dict or config:
        return False, None
    try:
        return True, unpacked(schema.model_validate(body["input"]))
    except ValidationError:
        return False, None


def _event_filters(body: dict[str, Any]) -> dict[str, Any] | None:
    """``/stream_events``' filters from ``body`` as LangServe reads them; None when they
    do not validate (LangServe's handler answers those)."""
    if _FILTER_KEYS.isdisjoint(body):  # none asked for: what validation would give
        return dict.fromkeys(FILTERS)
    try:
        parameters = StreamEventsParameters(**body)
    except ValidationError:
        return None
    return {field: getattr(parameters, field) for field in FILTERS}


def _public(metadata: dict[str, Any]) -> dict[str, Any]:
    """An event's metadata without the internal ``__`` keys, as LangServe sends it (a
    copy, the same keys in the same order)."""
    public = metadata.copy()
    for key in metadata:
        if key[:2] == "__":
            del public[key]
    return public


def _langserve_route(app: FastAPI, path: str) -> tuple[int, APIRoute]:
    for index, route in enumerate(app.router.routes):
        if isinstance(route, APIRoute) and route.path == path and "POST" in (route.methods or ()):
            return index, route
    raise LookupError(f"LangServe added no POST {path}")


def _answerable(chain: Runnable[Any, Any]) -> bool:
    """Whether the chain's input schema is the same for every run with no config."""
    hosted = os.environ.get("HOSTED_LANGSERVE_ENABLED", "false").lower() == "true"
    return not hosted and not isinstance(chain, DynamicRunnable)


async def _sse_events(source: Callable[[], AsyncGenerator[Any, None]],
                      encoded: Callable[[Any], bytes], first: dict[str, str] | None = None
                      ) -> AsyncIterator[dict[str, str] | bytes]:
    """LangServe's events for the stream ``source()`` makes: ``first`` (if any) before
    the first item's, a ``data`` event per item (``encoded``), then ``end``; if the stream
    raises, LangServe's generic ``error`` event and the error re-raised. Closing it closes
    the stream there and then (the chain's runs end before the response does), not in a
    task of the garbage collector's later. One generator layer per event."""
    try:
        async with aclosing(source()) as stream:
            async for item in stream:
                if first is not None:
                    yield first
                    first = None
                yield encoded(item)
    except GeneratorExit:  # closed where it waits: nobody reads an error event
        raise
    except BaseException:
        yield {"event": "error", "data": _ERROR}
        raise
    yield {"event": "end"}


def add_stream_route(app: FastAPI, name: str, chain: Runnable[Any, Any],
                     served: Runnable[Any, Any], guard: Guard, hook: Hook) -> bool:
    """Put this module's routes in place of LangServe's ``POST /<name>/stream`` and
    ``/stream_events`` (call after ``add_routes``, whose routes have ``guard`` as their
    dependency); whether it did. ``served`` is the runnable LangServe serves (``chain``,
    as ``served_chain`` wraps it)."""
    if not _answerable(chain):
        return False
    schema = chain.input_schema
    dumps = WellKnownLCSerializer().dumps
    in_place()  # its one check, now rather than in the first request

    def data(chunk: Any) -> bytes:
        return _DATA + dumps(chunk) + _END_DATA

    def public_data() -> Callable[[dict[str, Any]], bytes]:
        """A request's event encoder: each event without its metadata's internal keys.
        A run's events share one metadata dict (langchain-core's handler keeps it per
        run), so its public copy is made once per run, not once per event."""
        public: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

        def encoded(event: dict[str, Any]) -> bytes:
            metadata = event["metadata"]
            known = public.get(id(metadata))
            if known is None or known[0] is not metadata:
                known = public[id(metadata)] = (metadata, _public(metadata))
            event["metadata"] = known[1]
            return _DATA + dumps(event) + _END_DATA

        return encoded

    async def started(request: Request, endpoint: str
                      ) -> tuple[Any, RunnableConfig, dict[str, Any]] | None:
        """The input, the run's config and ``/stream_events``' filters (none for
        ``/stream``); None: LangServe's handler answers (before the hook runs, so that it
        runs once per request either way)."""
        try:
            body = await request.json()
        except ValueError:
            return None
        fast, input_ = _fast_input(body, schema)
        filters = _event_filters(body) if fast and endpoint == "stream_events" else {}
        if not fast or filters is None:
            return None
        config = defaults(await hook({}, request), run_name=f"/{name}",
                          user_agent=request.headers.get("user-agent"), endpoint=endpoint)
        return input_, config, filters

    async def stream(request: Request) -> Any:
        await guard(request)
        start = await started(request, "stream")
        if start is None:
            return await delegates["stream"](request)
        input_, config, _ = start
        metadata = {"event": "metadata",
                    "data": json.dumps({"run_id": config["run_id"]})}  # type: ignore[typeddict-item]

        def chunks() -> AsyncGenerator[Any, None]:
            return cast(AsyncGenerator[Any, None], chain.astream(input_, config=config))

        return LeanEventSourceResponse(_sse_events(chunks, data, metadata), sep=_SEP)

    async def stream_events(request: Request) -> Any:
        await guard(request)
        start = await started(request, "stream_events")
        if start is None:
            return await delegates["stream_events"](request)
        input_, config, filters = start

        def run_events() -> AsyncGenerator[Any, None]:
            return cast(AsyncGenerator[Any, None],
                        astream_events(served, input_, config, **filters))

        return LeanEventSourceResponse(_sse_events(run_events, public_data()), sep=_SEP)

    delegates = {endpoint: _replace(app, f"/{name}/{endpoint}", ours)
                 for endpoint, ours in (("stream", stream), ("stream_events", stream_events))}
    return True


def _replace(app: FastAPI, path: str, endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Route ``POST path`` to ``endpoint`` in the place of LangServe's route; LangServe's
    endpoint (without its route's dependencies: ``endpoint`` has run the guard).

    A plain Starlette route: the endpoint takes the request and returns a response, so
    FastAPI's per-request work around an endpoint (solving its parameters, its exit
    stacks) would change nothing but the cost: 1.6% of a short request's instructions."""
    index, langserve = _langserve_route(app, path)
    app.router.routes[index] = Route(path, endpoint, methods=["POST"], include_in_schema=False)
    return langserve.endpoint
