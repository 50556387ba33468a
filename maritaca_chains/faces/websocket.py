"""``WebSocket /<name>/ws``: one connection, many runs, each streamed as text frames.

Client frames (text):

- a JSON object (first non-blank character ``{``): the chain input, e.g.
  ``{"topic": "Brasil", "style": "cordel"}``, or the input with the run's choices, as on
  LangServe's routes: ``{"input": {"topic": "Brasil"}, "config": {"configurable":
  {"model": ..., "temperature": 0.3, "max_tokens": 200}}}``;
- ``stop`` or ``{"action": "stop"}``: stop the run now streaming (ignored when idle);
- any other text: the chain's main field (story ``topic``, qa ``question``,
  summarize ``text``), e.g. ``Brasil``.

For every input, in the order received, the server sends the answer's chunks as text
frames, then ``[STOPPED]`` if a stop ended it, ``[ERROR] {"type", "status_code",
"message"[, "retry_after", "errors"]}`` if it failed, or ``[TRUNCATED] {"finish_reason":
"length", "max_tokens", "message"}`` if the token limit cut it, then always ``[END]``. Inputs
sent during a run wait their turn, at most ``MARITACA_CHAINS_WS_MAX_QUEUED`` (2) of them:
one more is refused at once with ``[ERROR] {"type": "queue_full", "status_code": 429,
...}`` and no ``[END]`` (it is not a run; send it again after an ``[END]``). A JSON frame
nested deeper than ``MARITACA_CHAINS_MAX_JSON_DEPTH`` gets an ``invalid_input`` error,
and a frame over ``MARITACA_CHAINS_MAX_BODY_BYTES`` closes the socket (1009). The
connection stays open after errors; closing it stops the run. Every run counts as one
request against the key's quota, checked with the token budget before it starts: over
either, the run's answer is an ``[ERROR]`` frame of type ``quota_exceeded`` (429, with
``retry_after``). Refused handshakes get the request rules' HTTP 401/403/429 (403 too for
a browser ``Origin`` other than this server, so other sites cannot drive it)::

    async with websockets.connect("ws://127.0.0.1:8000/story/ws") as ws:
        await ws.send("Brasil")
        while (frame := await ws.recv()) != "[END]":
            print(frame, end="", flush=True)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from contextlib import aclosing, suppress
from typing import Any

from fastapi import HTTPException, WebSocket
from fastapi.responses import JSONResponse

from ..error_responses import ERROR_MARK, error_frame
from ..input_limits import limits_of, parse_json
from ..messages import language
from ..metrics import request_refused
from ..request_rules import admit_socket, rules_of, socket_access_refusal
from ._face import TRUNCATED, Face

__all__ = ["END", "STOPPED", "TRUNCATED", "is_stop", "socket_endpoint"]

logger = logging.getLogger("maritaca_chains.faces")

END, STOPPED = "[END]", "[STOPPED]"


async def _admit(ws: WebSocket) -> bool:
    """The request rules on the handshake (``request_rules.admit_socket``); a refusal
    gets its HTTP status (401/403/429) as the handshake's denial response."""
    try:
        await admit_socket(ws)
    except HTTPException as exc:
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            await ws.send_denial_response(JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers))
        else:
            await ws.close(1008, str(exc.detail).encode()[:120].decode(errors="ignore"))
        return False
    return True


class AccessEnded(Exception):
    """The socket's login session ended (or its key was removed) while it was open: the
    refusal is sent, and the session closes the socket (1008)."""


async def _answer(ws: WebSocket, face: Face, text: str, max_depth: int) -> None:
    """One run: admitted by the quotas (one request, and the token budget), then its
    chunks, then [TRUNCATED] if the token limit cut it; or an [ERROR] frame. Send
    failures propagate (client gone)."""
    try:
        request = face.parse_request(text, max_depth)
    except ValueError as exc:  # pydantic's ValidationError included
        await ws.send_text(error_frame(exc, language(ws.headers)))
        return
    if (denied := await socket_access_refusal(ws)) is not None:
        await ws.send_text(error_frame(denied, language(ws.headers)))
        raise AccessEnded(denied.detail)
    rules = rules_of(ws)
    if (refused := await rules.refusal(ws)) is not None:  # quota_exceeded, redis_unavailable
        await ws.send_text(error_frame(refused, language(ws.headers)))
        return
    ledger = rules.accounts.open(ws, face.name)
    async with aclosing(face.chunks(request, ledger)) as chunks:
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                if (run := ledger.last) is not None and run.cut:
                    await ws.send_text(f"{TRUNCATED} " + json.dumps(
                        {"finish_reason": "length", "max_tokens": run.max_tokens,
                         "message": run.cut_note(language(ws.headers))}, ensure_ascii=False))
                return
            except Exception as exc:
                logger.error("/%s/ws run failed: %s: %s", face.name, type(exc).__name__, exc)
                await ws.send_text(error_frame(exc, language(ws.headers)))
                return
            await ws.send_text(chunk)


def is_stop(text: str) -> bool:
    """Whether a client frame asks to stop the run (``stop`` or ``{"action": "stop"}``)."""
    stripped = text.strip()
    if stripped.lower() == "stop":
        return True
    if not stripped.startswith("{") or '"action"' not in stripped:
        return False
    try:
        message = parse_json(stripped, max_depth=1)  # {"action": "stop"} is flat
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("action") == "stop"


def _queue_full(waiting: int) -> str:
    request_refused("ws_input_refused")
    return f"{ERROR_MARK} " + json.dumps({
        "type": "queue_full", "status_code": 429,
        "message": f"{waiting} inputs are already waiting behind the running one "
                   f"(MARITACA_CHAINS_WS_MAX_QUEUED): this one was not queued; send it "
                   f"again after an [END], or send stop"}, ensure_ascii=False)


async def _session(ws: WebSocket, face: Face) -> None:
    """Read frames; a worker answers inputs in order; ``stop`` cancels the current run."""
    limits = limits_of(ws.app)
    inputs: asyncio.Queue[str] = asyncio.Queue()
    running: list[asyncio.Task[None]] = []

    async def work() -> None:
        while True:
            run = asyncio.create_task(_answer(ws, face, await inputs.get(),
                                              limits.max_json_depth))
            running[:] = [run]
            try:
                await asyncio.wait({run})
            finally:
                running.clear()
                if not run.done():  # the session ends: stop the run before returning
                    run.cancel()
                    await asyncio.wait({run})
            stopped = run.cancelled()
            error = None if stopped else run.exception()  # a send failed, or access ended
            close = ((1008, "access ended: log in again or send an access key")
                     if isinstance(error, AccessEnded) else (1011, "internal error"))
            # Drop the task (and its error) at once: a cancelled task keeps its traceback,
            # whose frames keep the chain's generators, and so the upstream request, alive.
            del run
            if error is not None:
                del error
                with suppress(Exception):  # the client is most likely gone already
                    await ws.close(*close)
                return
            if stopped:
                await ws.send_text(STOPPED)
            await ws.send_text(END)

    worker = asyncio.create_task(work())
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            if is_stop(text):
                if running:  # (no local name: it would keep the cancelled task alive)
                    running[0].cancel()
            elif (waiting := inputs.qsize()) >= limits.ws_max_queued and (running or waiting):
                await ws.send_text(_queue_full(waiting))
            else:
                inputs.put_nowait(text)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


def socket_endpoint(face: Face) -> Callable[[WebSocket], Any]:
    async def socket(ws: WebSocket) -> None:
        if await _admit(ws):
            await ws.accept()
            await _session(ws, face)

    return socket
