"""Where LangServe needs help, kept together and named as such.

LangServe (in maintenance) gets a few things wrong for a public streaming server; each
fix here says which:

- ``UpstreamErrorMiddleware``: LangServe hides every mid-stream exception behind one
  generic SSE ``error`` event and re-raises it; the event here names the cause
  (``error_responses``), the body ends cleanly, and every upstream stream a request
  opened is closed when it ends (hang-ups included).
- ``JSONBodyGuard``: bodies LangServe/FastAPI turn into a 500 (not UTF-8, NaN,
  lone surrogates, huge, ``"config": null``, ``/batch`` inputs that are not a list)
  get a 422/413 instead.
- ``check_config``: the per-request hook that refuses ``configurable`` keys clients
  must not set (``api_key``, ``base_url``...), in the body and in ``/c/<hash>/`` paths.
- ``validation_error_json``: ``/batch`` validates inputs without catching the error.
- ``feedback_routes``: ``add_routes`` always adds ``/token_feedback``, which answers 400
  unless LangSmith is on *and* a ``token_feedback_config`` is given (we give none): it
  is left out. With LangSmith tracing on, the ``/feedback`` and ``/public_trace_link``
  routes (which work then) are added instead, so the playground can send feedback.
- ``PlaygroundInPortuguese``: the playground's page is ``<html lang="en">`` titled
  "Playground" whatever it serves; it says pt-BR and names the chain instead.
- ``served_chain``: ``/stream`` attaches an event aggregator to every run and never
  reads it; it is not awaited in place, so langchain-core makes an asyncio task for it
  at every token (a quarter of the server's CPU relaying paced streams). The chain
  LangServe serves drops it from ``astream``'s callbacks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast
from uuid import UUID

import orjson
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langserve.api_handler import _config_from_hash  # how LangServe reads /c/<hash>/
from langserve.callbacks import AsyncEventAggregatorCallback
from pydantic import ValidationError

from chains import CONFIGURABLE_KEYS, MAX_TOKENS_RANGE, TEMPERATURE_RANGE
from maritaca import closing_upstreams

from .error_responses import sse_error_data, validation_details
from .input_limits import DEFAULT_MAX_JSON_DEPTH, JSONTooDeep, parse_json
from .messages import scope_language
from .run_recorder import run_callbacks

__all__ = ["JSONBodyGuard", "PlaygroundInPortuguese", "UpstreamErrorMiddleware", "check_config",
           "check_configurable", "feedback_routes", "served_chain", "validation_error_json"]

logger = logging.getLogger("maritaca_chains.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

# LangServe's one error event for every mid-stream failure, as it serialises it
_GENERIC_ERROR = json.dumps({"status_code": 500, "message": "Internal Server Error"}).encode()


class PlaygroundInPortuguese:
    """Pure ASGI: a playground page (``/<chain>/playground/``) says ``lang="pt-BR"`` and is
    titled after its chain (``titles``: chain name -> title). Other responses, and a
    page that does not carry LangServe's markers, pass untouched."""

    _LANG, _TITLE = b'<html lang="en">', b"<title>Playground</title>"

    def __init__(self, app: Any, titles: dict[str, str]) -> None:
        self.app, self.titles = app, titles

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        parts = scope.get("path", "").strip("/").split("/") if scope["type"] == "http" else []
        if len(parts) != 2 or parts[1] != "playground" or parts[0] not in self.titles:
            await self.app(scope, receive, send)
            return
        title = f"<title>Playground · {self.titles[parts[0]]} · maritaca-chains</title>"
        held: Message | None = None

        async def send_in_portuguese(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                held = message
                return
            if held is not None:
                start, held = held, None
                body = message.get("body", b"")
                if not message.get("more_body") and self._TITLE in body:
                    body = body.replace(self._LANG, b'<html lang="pt-BR">', 1).replace(
                        self._TITLE, title.encode(), 1)
                    message["body"] = body
                    start["headers"] = [(k, v) for k, v in start["headers"]
                                        if k.lower() != b"content-length"] + [
                        (b"content-length", str(len(body)).encode())]
                await send(start)
            await send(message)

        await self.app(scope, receive, send_in_portuguese)


def feedback_routes() -> dict[str, Any]:
    """``add_routes`` keyword arguments for LangServe's feedback routes: none unless
    LangSmith tracing is on (``LANGSMITH_TRACING=true``), as they only answer 400 then."""
    from langsmith.utils import tracing_is_enabled

    on = bool(tracing_is_enabled())
    # "token_feedback" is a real endpoint name LangServe accepts, missing from its Literal
    return {"enable_feedback_endpoint": on, "enable_public_trace_link_endpoint": on,
            "disabled_endpoints": cast(Any, ["token_feedback"])}


def _only(exc: BaseException, error: BaseException) -> bool:
    """Whether ``exc`` is ``error``, alone or in (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(inner, error) for inner in exc.exceptions)
    return exc is error


class _ErrorBox:
    """Per-request holder for the exception that ended a run."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None


class _RecordRunError(AsyncCallbackHandler):
    """Keeps the root run's exception for the error middleware, and logs it with the run id."""

    ignore_llm = ignore_chat_model = ignore_retriever = ignore_agent = ignore_retry = True
    ignore_custom_event = True
    # awaited in place: otherwise langchain-core wraps every event, each model chunk
    # included, in a task of its own just to find it ignored
    run_inline = True

    def __init__(self, box: _ErrorBox) -> None:
        self.box = box

    async def on_chain_error(self, error: BaseException, *, run_id: UUID,
                             parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        if parent_run_id is not None or self.box.error is not None:
            return
        if isinstance(error, asyncio.CancelledError):  # the client went away: not a failure
            logger.info("run %s cancelled: the client disconnected", run_id)
            return
        self.box.error = error
        logger.error("run %s failed: %s: %s", run_id, type(error).__name__, error)


class UpstreamErrorMiddleware:
    """Names upstream failures in streams, and closes what a request left open.

    - LangServe hides every mid-stream exception behind one generic SSE error event, then
      re-raises it (uvicorn logs a traceback and cuts the body short). The run's exception
      (caught by ``_RecordRunError``) says whether it was a rate limit, a rejected key or
      an unreachable API: the event says that instead, and the body ends properly.
    - When a request ends (a client hanging up included), every upstream stream it
      opened is closed, even if a framework still holds the abandoned generators.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            with closing_upstreams():
                await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        box = _ErrorBox()
        scope.setdefault("state", {})["error_box"] = box
        started = ended = False

        async def send_with_cause(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body":
                ended = not message.get("more_body", False)
                if box.error is not None and _GENERIC_ERROR in message.get("body", b""):
                    cause = sse_error_data(box.error, scope_language(scope))
                    message["body"] = message["body"].replace(_GENERIC_ERROR, cause)
            await send(message)

        with closing_upstreams():
            try:
                await self.app(scope, receive, send_with_cause)
            except Exception as exc:
                if not (started and box.error is not None and _only(exc, box.error)):
                    raise
                # already told to the client as an error event, and logged with its run id
                if not ended:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})


class JSONBodyGuard:
    """Answers 422/413 for JSON bodies LangServe would turn into a 500 (and reads
    ``"config": null`` as no config, which LangServe fails on too).

    LangServe and FastAPI parse with the standard library, which accepts NaN/Infinity
    and lone surrogates and then fails to render its own 422 echoing them, and a body
    that is not UTF-8 escapes as a UnicodeDecodeError. orjson refuses all three, so a
    body it cannot parse gets a clear 422 here, before any route runs; so does one
    nested deeper than ``max_depth`` (``input_limits.parse_json``). The body's size is
    bounded before it gets here (``input_limits.BodyLimit``).
    """

    def __init__(self, app: Callable[..., Awaitable[None]], *,
                 max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> None:
        self.app, self.max_depth = app, max_depth

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" \
                or b"json" not in dict(scope["headers"]).get(b"content-type", b""):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            parsed = parse_json(body, self.max_depth)
        except ValueError as exc:
            # FastAPI's own shape for a body that does not parse
            response = JSONResponse({"detail": [{
                "type": "json_too_deep", "loc": ["body"], "msg": f"{exc}: flatten it"}
                if isinstance(exc, JSONTooDeep) else {
                "type": "json_invalid", "loc": ["body"],
                "msg": f"The request body is not valid JSON (UTF-8, no NaN/Infinity, "
                       f"no lone surrogates): {exc}"}]}, 422)
            await response(scope, receive, send)
            return
        if scope["path"].endswith("/batch") and isinstance(parsed, dict) \
                and not isinstance(parsed.get("inputs", []), list):
            response = JSONResponse({"detail": [{  # LangServe calls len() on it: a 500
                "type": "list_type", "loc": ["body", "inputs"],
                "msg": "inputs must be a list of the chain's inputs"}]}, 422)
            await response(scope, receive, send)
            return
        if isinstance(parsed, dict) and "config" in parsed and parsed["config"] is None:
            del parsed["config"]  # "config": null means no config (LangServe: a 500)
            body = orjson.dumps(parsed)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def check_configurable(configurable: dict[str, Any]) -> None:
    if refused := sorted(set(configurable) - CONFIGURABLE_KEYS):
        raise HTTPException(422, f"config.configurable may only set "
                                 f"{sorted(CONFIGURABLE_KEYS)}; refused: {refused}")
    low, high = TEMPERATURE_RANGE
    temperature = configurable.get("temperature")
    if temperature is not None and not (isinstance(temperature, int | float)
                                        and not isinstance(temperature, bool)
                                        and low <= temperature <= high):
        raise HTTPException(422, f"config.configurable.temperature must be {low:g} to {high:g}")
    low_t, high_t = MAX_TOKENS_RANGE
    max_tokens = configurable.get("max_tokens")
    if max_tokens is not None and not (isinstance(max_tokens, int)
                                       and not isinstance(max_tokens, bool)
                                       and (low_t <= max_tokens <= high_t or max_tokens == 0)):
        raise HTTPException(422, f"config.configurable.max_tokens must be {low_t} to {high_t} "
                                 f"(or 0: the chain's own budget)")


async def check_config(config: dict[str, Any], request: Request) -> dict[str, Any]:
    """LangServe's per-request hook: refuse unknown ``configurable`` keys (api_key,
    base_url...) and out-of-range values; record the run's error for the middleware,
    and the run itself (``run_recorder``: log line and metrics)."""
    if config_hash := request.path_params.get("config_hash"):  # /<chain>/c/<hash>/...
        check_configurable(_config_from_hash(config_hash).get("configurable") or {})
    if request.method == "POST":
        try:
            body = await request.json()
        except ValueError:
            body = {}
        configs = body.get("config") if isinstance(body, dict) else None
        for one in configs if isinstance(configs, list) else [configs]:
            if isinstance(one, dict) and isinstance(one.get("configurable"), dict):
                check_configurable(one["configurable"])
    box = request.scope.get("state", {}).get("error_box")
    if box is not None:
        config["callbacks"] = [*(config.get("callbacks") or []), _RecordRunError(box)]
    if recorders := run_callbacks(request, request.url.path.split("/")[1]):  # /<chain>/...
        config["callbacks"] = [*(config.get("callbacks") or []), *recorders]
    return config


async def validation_error_json(request: Request, exc: Exception) -> JSONResponse:
    """LangServe's ``/batch`` validates its inputs without catching the error (a 500)."""
    assert isinstance(exc, ValidationError)
    return JSONResponse({"detail": validation_details(exc)}, status_code=422)


class _StreamWithoutAggregator(RunnableBinding):  # type: ignore[type-arg]
    """The chain, with LangServe's unread ``/stream`` event aggregator left out."""

    async def astream(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Any:
        callbacks = (config or {}).get("callbacks")
        if isinstance(callbacks, list):
            config = {**(config or {}), "callbacks": [
                handler for handler in callbacks
                if not isinstance(handler, AsyncEventAggregatorCallback)]}
        async for chunk in super().astream(input, config, **kwargs):
            yield chunk


def served_chain(chain: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """``chain`` as LangServe should serve it (same schemas, name and runs)."""
    return _StreamWithoutAggregator(bound=chain)
