"""``POST /<chain>/ai-sdk``: the chain for the Vercel AI SDK's ``useChat`` (``Chat`` and
``DefaultChatTransport``), answering its UI message stream (``ai_sdk_wire``); and
``GET /<chain>/ai-sdk/<chat id>/stream``, which resumes it (``resumeStream``).

Request: what ``DefaultChatTransport`` sends, ``{"id": <chat id>, "messages": [UIMessage],
"trigger", "messageId"}``, plus what its ``body`` option adds: ``input`` (the chain's other
fields) and ``config`` (``{"configurable": {"model", "temperature", "max_tokens"}}``).
The text parts of the last user message fill the chain's main field (story ``topic``,
qa ``question``, summarize ``text``). Bad input is FastAPI's 422 naming the field
(``body.input.length``), which the SDK reports as the error's message.

Every answer is a resumable run (``runs``: in memory, or Redis with
``MARITACA_CHAINS_REDIS_URL``) named by the chat: the POST's response follows the run
from its start, so a dropped connection does not stop the answer. It goes on for
``MARITACA_CHAINS_RUN_GRACE_SECONDS``; a ``GET .../<chat id>/stream`` in that time (or
after the end, until someone has read the answer to its end) replays it from the start,
as the SDK expects by default (``resumeStreamIsReplay``), then follows it live; with
nobody back in time, the run is cancelled and its upstream request closed. 204 when the
chat has nothing to resume. A new message in the chat cancels an answer still running.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from ..error_responses import describe_error
from ..messages import Language, language, say
from ..redis_outage import REDIS_DOWN
from ..refusals import Refusal
from ..request_rules import RunRequest, admitted_caller, rules_of
from ..runs import EventsDropped, KeyRunsFull, RunInfo, RunManager, RunsFull
from ..runs.wire import Reason
from ..security import caller_label
from ..threads import check_thread
from ._face import Face
from ._sse import ClosingEventStream
from .ai_sdk_wire import UI_MESSAGE_STREAM_HEADERS, AiSdkWire, error_part

__all__ = ["add_ai_sdk_routes"]

logger = logging.getLogger("maritaca_chains.faces")

KEEP_ALIVE_SECONDS = 15.0  # a comment line on a quiet stream, so proxies keep it open
_PING = b": ping\n\n"
MAX_CHAT_ID = 200


def add_ai_sdk_routes(app: FastAPI, faces: list[Face], manager: RunManager) -> None:
    """The two AI SDK routes of every chain, behind the request rules (access keys; an
    answer, which starts a run, also the quotas)."""
    for face in faces:
        name = face.name
        app.add_api_route(f"/{name}/ai-sdk", _answer_endpoint(face, manager), methods=["POST"],
                          dependencies=[Depends(admitted_caller)], tags=[name],
                          response_model=None, summary=f"The {name} answer for the Vercel AI SDK (useChat)",
                          openapi_extra={"requestBody": {"required": True, "content": {
                              "application/json": {"schema": _request_schema(face)}}}},
                          responses={200: {"content": {"text/event-stream": {}}}})
        app.add_api_route(f"/{name}/ai-sdk/{{chat_id}}/stream", _resume_endpoint(face, manager),
                          methods=["GET"], dependencies=[Depends(admitted_caller)], tags=[name],
                          response_model=None,
                          summary="Replay the chat's current answer (the AI SDK's resumeStream)",
                          responses={200: {"content": {"text/event-stream": {}}},
                                     204: {"description": "Nothing to resume"}})


# ---------------------------------------------------------------------- the request

def _request_schema(face: Face) -> dict[str, Any]:
    """What DefaultChatTransport sends, and the chain's other fields (OpenAPI docs)."""
    inputs = face.input_type.model_json_schema()
    others = {k: v for k, v in inputs.get("properties", {}).items() if k != face.main_field}
    config = face.config_type.model_json_schema()
    configurable = config.get("$defs", {}).get("Configurable", {"type": "object"})
    return {"title": f"{face.name}: DefaultChatTransport's body", "type": "object",
            "description": f"The text parts of the last user message fill {face.main_field}: "
                           f"a chat without one, or whose text the chain refuses, is a 422 "
                           f"naming body.messages or body.input (what a JSON schema cannot "
                           f"say). The other messages are the client's own and not read.",
            "required": ["id", "messages"], "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": MAX_CHAT_ID},
                "messages": {"type": "array", "minItems": 1, "items": {
                    "description": "a UIMessage: {id, role, parts}; a user message's parts "
                                   "are text parts (and data-, step-, source- parts)"}},
                "trigger": {"description": "submit-message or regenerate-message (not read)"},
                "messageId": {"description": "not read"},
                "input": {"anyOf": [{"type": "null"}, {
                    "type": "object", "properties": others, "additionalProperties": False,
                    "$defs": inputs.get("$defs", {})}]},
                "config": {"anyOf": [{"type": "null"}, {
                    "type": "object", "additionalProperties": False,
                    "properties": {"configurable": configurable}}]}}}


def _invalid(loc: tuple[Any, ...], message: str, kind: str = "value_error"
             ) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body", *loc), "msg": message}])


def _user_text(messages: Any, main_field: str) -> str:
    """The text parts of the last user message, joined."""
    if not isinstance(messages, list) or not messages:
        raise _invalid(("messages",), "messages must be the chat's messages (a non-empty list)")
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        parts = message.get("parts")
        if parts is None and isinstance(message.get("content"), str):
            return str(message["content"])  # the older (AI SDK 4) message shape
        if not isinstance(parts, list):
            raise _invalid(("messages", index, "parts"), "a user message needs its parts")
        texts = []
        for at, piece in enumerate(parts):
            kind = piece.get("type") if isinstance(piece, dict) else None
            if kind == "text" and isinstance(piece.get("text"), str):
                texts.append(piece["text"])
            elif kind is None or not str(kind).startswith(("data-", "step-", "source-")):
                raise _invalid(("messages", index, "parts", at),
                               f"only text parts can fill {main_field}; got {kind!r}")
        return "".join(texts)
    raise _invalid(("messages",), f"no user message: its text fills the chain's {main_field}")


def parse_chat_body(face: Face, body: Any) -> tuple[str, RunRequest]:
    """(chat id, the chain's input and config) from ``DefaultChatTransport``'s body."""
    if not isinstance(body, dict):
        raise _invalid((), "the body must be a JSON object (what DefaultChatTransport sends)")
    chat_id = body.get("id")
    if not isinstance(chat_id, str) or not 0 < len(chat_id) <= MAX_CHAT_ID:
        raise _invalid(("id",), f"id must be the chat's id (1 to {MAX_CHAT_ID} characters)")
    text = _user_text(body.get("messages"), face.main_field)
    extra = {} if body.get("input") is None else body["input"]
    if not isinstance(extra, dict):
        raise _invalid(("input",), "input must be an object of the chain's other fields")
    if face.main_field in extra:
        raise _invalid(("input", face.main_field),
                       f"{face.main_field} comes from the last user message; leave it out of input")
    envelope: dict[str, Any] = {"input": {**extra, face.main_field: text}}
    if body.get("config") is not None:
        envelope["config"] = body["config"]
    try:
        return chat_id, face.request_from(envelope)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from exc
    except ValueError as exc:
        raise _invalid(("config",), str(exc)) from exc


SUPERSEDED = Reason("superseded")  # a newer message of the chat took its place


def _chat_key(face: Face, request: Request, chat_id: str) -> str:
    """The run name of a chat: per chain and per access key (another key never finds it)."""
    return f"ai-sdk:{face.name}:{caller_label(request)}:{chat_id}"


# ---------------------------------------------------------------------- the answer

def _answer_endpoint(face: Face, manager: RunManager) -> Callable[[Request], Any]:
    async def answer(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError as exc:
            raise _invalid((), "The request body is not JSON", "json_invalid") from exc
        chat_id, parsed = parse_chat_body(face, body)
        info = RunInfo(run_id=str(uuid.uuid4()), chain=face.name, owner=caller_label(request))
        await check_thread(face.chain, parsed.config, info.owner,
                           language(request.headers))  # another key's: 404 now
        # the chat moved on: an answer of it still running (kept for a resume after the
        # client's stop()) is moot, and ends before this one starts, freeing its thread
        key = _chat_key(face, request, chat_id)
        await manager.ensure_open()  # the store opens with the first run
        earlier = await manager.store.named_run(key)
        if earlier is not None:
            await manager.cancel_and_wait(earlier, SUPERSEDED)
        # the run's ledger: its log line, metrics and token charge, and the usage part
        ledger = rules_of(request).accounts.open(request, face.name)
        try:
            await manager.start(info, face.chain, parsed.value, parsed.config, ledger,
                                wire=AiSdkWire(ledger, language(request.headers)))
        except KeyRunsFull as exc:  # as on /runs: one key cannot take every slot
            raise Refusal(429, "key_runs_full", language(request.headers), why=exc,
                          headers={"Retry-After": "5"}) from exc
        except RunsFull as exc:
            raise Refusal(503, "runs_full", language(request.headers), why=exc,
                          headers={"Retry-After": "5"}) from exc
        previous = await manager.store.name_run(key, info.run_id)
        if previous is not None and previous != info.run_id:  # a message sent meanwhile
            await manager.cancel(previous, SUPERSEDED)
        return ClosingEventStream(_replay(manager, info.run_id, key, language(request.headers)),
                                  headers=UI_MESSAGE_STREAM_HEADERS)

    answer.__doc__ = (f"The {face.name} chain for the Vercel AI SDK: DefaultChatTransport's "
                      f"body in, the UI message stream (SSE) out; the last user message fills "
                      f"{face.main_field}, the body's input the other fields.")
    return answer


def _resume_endpoint(face: Face, manager: RunManager) -> Callable[..., Any]:
    async def resume(chat_id: str, request: Request) -> Response:
        await manager.ensure_open()
        key = _chat_key(face, request, chat_id)
        run_id = await manager.store.named_run(key)
        info = await manager.store.get(run_id) if run_id else None
        if info is None or info.chain != face.name or info.owner != caller_label(request):
            return Response(status_code=204)  # nothing to resume: the SDK stops there
        return ClosingEventStream(_replay(manager, info.run_id, key, language(request.headers)),
                                  headers=UI_MESSAGE_STREAM_HEADERS)

    resume.__doc__ = ("Replay the chat's answer from its start, then follow it live "
                      "(DefaultChatTransport's reconnectToStream); 204 when there is none.")
    return resume


async def _replay(manager: RunManager, run_id: str, key: str,
                  lang: Language) -> AsyncGenerator[bytes, None]:
    """The run's parts from its start, live until its end; read to the end, the chat has
    nothing more to resume. Errors said in ``lang``."""
    try:
        async with aclosing(manager.store.follow(run_id, 0, idle=KEEP_ALIVE_SECONDS)) as batches:
            async for batch in batches:
                yield b"".join(batch) if batch else _PING
    except EventsDropped as exc:
        yield error_part(say("replay_too_long", lang, why=exc))
    except REDIS_DOWN as exc:  # named; the answer may still be resumed once Redis is back
        yield error_part(describe_error(exc, lang)["message"])
        return
    await manager.store.unname_run(key, run_id)
