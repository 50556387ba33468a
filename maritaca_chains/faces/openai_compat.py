"""The OpenAI-compatible face under ``/v1``: what the ``openai`` SDKs, LangChain's
``ChatOpenAI``, Open WebUI, LibreChat and continue.dev speak.

- ``GET /v1/models`` (and ``/v1/models/<id>``): every chain served, by its name, then the
  backend's own models (Maritaca's catalogue; SmolLM2 on the embedded backend).
- ``POST /v1/chat/completions``: with ``model`` a chain, the last user message's text
  fills the chain's main field and ``input`` (``extra_body={"input": {...}}``) the others;
  with ``model`` a backend model, a plain chat over the whole message list.
  ``temperature`` and ``max_tokens``/``max_completion_tokens`` become the run's
  ``configurable`` limits. ``stream: true``: ``chat.completion.chunk`` SSE events, one per
  chunk, ``finish_reason`` ``length`` when the token limit cut the answer, with
  ``stream_options.include_usage`` a last chunk with ``usage`` and ``cost_brl`` beside
  it, then ``data: [DONE]``; ``stream: false``: a ``chat.completion`` (``usage`` and
  ``cost_brl`` included).

Errors are OpenAI's shape (``openai_request.OpenAIError``): 401 wrong access key (the SDKs
send it as ``Authorization: Bearer``), 404 unknown model, 422 a bad parameter or chain
field (``param`` names it), 429 with ``Retry-After`` from the quotas or the upstream,
upstream failures with the statuses of every face. A failure after the answer began is a
last ``data: {"error": {...}}`` event, on which the SDKs raise. Hanging up stops the run
and its upstream request; the run log, metrics and quotas count it as on every face.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any, cast

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ValidationError
from starlette.types import Receive

from chains import HISTORY_FIELD, configurable_model
from maritaca import closing_upstreams

from ..event_stream import ClientHungUp, before_hang_up
from ..ledger import Ledger, RunLedger
from ..request_rules import RunRequest, admitted_caller, current_caller, rules_of
from ..threads import THREAD_ID, ThreadChain
from ._face import Face
from ._sse import ClosingEventStream
from .openai_request import (
    CompletionRequest,
    OpenAIError,
    chain_input,
    chat_messages,
    earlier_turns,
    invalid,
    parse_completion_request,
    request_schema,
)
from .openai_wire import DONE, CompletionWire, describe_openai

__all__ = ["CHAT_RUN_NAME", "add_openai_routes"]

logger = logging.getLogger("maritaca_chains.faces")

CHAT_RUN_NAME = "chat"  # how the run log and metrics name a plain chat with a model
_CODES = {401: "invalid_api_key", 403: "forbidden", 429: "rate_limit_exceeded"}

Chunks = AsyncGenerator[str, None]


class _ChainTarget:
    """``model`` names a chain: its main field from the last user message."""

    def __init__(self, face: Face) -> None:
        self.face, self.label = face, face.name

    def chunks(self, request: CompletionRequest, ledger: Ledger) -> Chunks:
        envelope: dict[str, Any] = {"input": chain_input(request, self.face.main_field)}
        if request.configurable:
            envelope["config"] = {"configurable": request.configurable}
        try:
            parsed = self.face.request_from(envelope)
        except ValidationError as exc:
            raise _invalid_input(exc, self.face.main_field) from exc
        except ValueError as exc:
            raise invalid(None, str(exc)) from exc
        if isinstance(self.face.chain, ThreadChain) and not (
                parsed.config.get("configurable") or {}).get(THREAD_ID):
            # a conversation chain: the client's own messages are its history
            parsed = RunRequest(cast(Any, {**parsed.value.model_dump(),
                                           HISTORY_FIELD: earlier_turns(request)}),
                                parsed.config)
        return self.face.chunks(parsed, ledger)


def _invalid_input(exc: ValidationError, main_field: str) -> OpenAIError:
    """A chain's 422: ``param`` is ``input.<field>``, or ``messages`` for the main field."""
    named = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"][1:]) or "input"  # loc: ("input", ...)
        named.append((where, f"{where} (the last user message)" if where == main_field
                      else f"input.{where}", error["msg"]))
    param = "messages" if named[0][0] == main_field else named[0][1]
    return invalid(param, "Invalid input: " + "; ".join(f"{what}: {msg}"
                                                        for _, what, msg in named))


class _ModelTarget:
    """``model`` names one of the backend's models: a plain chat over the messages."""

    label = CHAT_RUN_NAME

    def __init__(self, model: Runnable[Any, Any], name: str) -> None:
        self.model, self.name = model, name

    def chunks(self, request: CompletionRequest, ledger: Ledger) -> Chunks:
        messages = chat_messages(request)
        config: RunnableConfig = ledger.config({
            "configurable": {**request.configurable, "model": self.name},
            "run_name": CHAT_RUN_NAME})
        return _model_text(self.model, messages, config)


async def _model_text(model: Runnable[Any, Any], messages: list[BaseMessage],
                      config: RunnableConfig) -> Chunks:
    """The model's streamed text; what the run opened upstream closes however it ends."""
    stream = cast(AsyncGenerator[Any, None], model.astream(messages, config))
    with closing_upstreams():
        async with aclosing(stream):
            async for chunk in stream:
                text = chunk.content if isinstance(chunk.content, str) else chunk.text
                if text:
                    yield text


def add_openai_routes(app: FastAPI, faces: list[Face], model: BaseChatModel,
                      model_names: Sequence[str]) -> None:
    """``/v1/models`` and ``/v1/chat/completions`` for ``faces`` and the backend's
    ``model_names`` (served by ``model``), behind the request rules (access keys and
    quotas), errors in OpenAI's shape; each run kept in a ledger (``ledger``)."""
    chat_model = configurable_model(model)
    targets: dict[str, _ChainTarget | _ModelTarget] = {
        name: _ModelTarget(chat_model, name) for name in model_names}
    targets.update({face.name: _ChainTarget(face) for face in faces})  # a chain wins a name
    listing = [{"id": face.name, "object": "model", "created": 0,
                "owned_by": "maritaca-chains"} for face in faces]
    listing += [{"id": name, "object": "model", "created": 0, "owned_by": "maritaca"}
                for name in model_names if name not in {face.name for face in faces}]
    guard = Depends(_openai_guard)
    app.add_exception_handler(OpenAIError, _openai_error_json)

    @app.get("/v1/models", dependencies=[guard], tags=["openai"],
             summary="The chains and models /v1/chat/completions answers")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": listing}

    @app.get("/v1/models/{model_id:path}", dependencies=[guard], tags=["openai"],
             summary="One chain or model")
    async def get_model(model_id: str) -> dict[str, Any]:
        for entry in listing:
            if entry["id"] == model_id:
                return entry
        raise _unknown_model(model_id)

    @app.post("/v1/chat/completions", dependencies=[guard], tags=["openai"],
              response_model=None, summary="OpenAI's Chat Completions, on a chain or a model",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": request_schema(
                      [str(entry["id"]) for entry in listing])}}}},
              responses={200: {"content": {"text/event-stream": {}}}})
    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError as exc:
            raise invalid(None, "The body is not JSON", "invalid_json") from exc
        completion = parse_completion_request(body)
        target = targets.get(completion.model)
        if target is None:
            raise _unknown_model(completion.model)
        ledger = rules_of(request).accounts.open(request, target.label)
        chunks = target.chunks(completion, ledger)
        wire = CompletionWire(completion.model)
        try:
            if completion.stream:
                return await _streamed(target.label, wire, chunks, ledger, completion,
                                       request.receive)
            return await _whole(target.label, wire, chunks, ledger, request.receive)
        except ClientHungUp:  # nobody reads an answer now; the run stopped with the request
            await chunks.aclose()
            return Response(status_code=204)


def _unknown_model(name: str) -> OpenAIError:
    return OpenAIError(404, f"The model {name[:100]!r} does not exist here: GET /v1/models "
                            f"lists the chains and models served", "model_not_found", "model")


async def _failed(label: str, chunks: Chunks, exc: Exception) -> JSONResponse:
    await chunks.aclose()
    logger.error("/v1/chat/completions (%s) failed: %s: %s", label, type(exc).__name__, exc)
    status, body, headers = describe_openai(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def _run(ledger: Ledger) -> RunLedger:
    """The run that just ended (its ledger is closed once its stream is read)."""
    run = ledger.last
    assert run is not None, "the run ended without its ledger closing"
    return run


async def _whole(label: str, wire: CompletionWire, chunks: Chunks, ledger: Ledger,
                 receive: Receive) -> Response:
    async def read() -> str:
        async with aclosing(chunks):
            return "".join([chunk async for chunk in chunks])

    try:
        text = await before_hang_up(read(), receive)
    except ClientHungUp:
        raise
    except Exception as exc:
        return await _failed(label, chunks, exc)
    run = _run(ledger)
    return JSONResponse(wire.completion(text, "length" if run.cut else "stop", run))


async def _streamed(label: str, wire: CompletionWire, chunks: Chunks, ledger: Ledger,
                    completion: CompletionRequest, receive: Receive) -> Response:
    try:  # a failure before any text: an HTTP error
        first = await before_hang_up(anext(chunks, None), receive)
    except ClientHungUp:
        raise
    except Exception as exc:
        return await _failed(label, chunks, exc)
    return ClosingEventStream(_events(label, wire, first, chunks, ledger,
                                      completion.include_usage))


async def _events(label: str, wire: CompletionWire, first: str | None, chunks: Chunks,
                  ledger: Ledger, include_usage: bool) -> AsyncGenerator[bytes, None]:
    try:
        yield wire.role_chunk() + (wire.text_chunk(first) if first is not None else b"")
        text_chunk = wire.text_chunk
        async for chunk in chunks:
            yield text_chunk(chunk)
    except Exception as exc:
        logger.error("/v1/chat/completions (%s) failed mid-stream: %s: %s", label,
                     type(exc).__name__, exc)
        yield wire.error_chunk(exc)
        return
    finally:
        await chunks.aclose()
    run = _run(ledger)
    yield wire.finish_chunk("length" if run.cut else "stop")
    if include_usage:
        yield wire.usage_chunk(run)
    yield DONE


async def _openai_guard(request: Request) -> None:
    """The request rules (``admitted_caller``: access key, quotas), their refusals in
    OpenAI's error shape."""
    try:
        await admitted_caller(request, await current_caller(request))
    except HTTPException as exc:
        raise OpenAIError(exc.status_code, str(exc.detail), _CODES.get(exc.status_code),
                          headers=dict(exc.headers or {})) from None


async def _openai_error_json(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIError)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)
