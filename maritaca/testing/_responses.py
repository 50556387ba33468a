"""The server side of the wire: write a planned :class:`~._replies.Reply` as Maritaca does.

:func:`send_completion` writes a ``chat.completion`` JSON body, :func:`send_stream` an SSE
stream of ``chat.completion.chunk`` events (role chunk, one chunk per token,
``finish_reason``, usage when asked, ``[DONE]``), both playing the broken-stream scenarios
(``drop``, ``error_event``) and the pacing options. Streams pre-serialise everything but
the token: each event is ``prefix + json(token) + suffix``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Message, Send

from ._calls import Call, close_connection
from ._records import RecordedRequest
from ._replies import Reply
from ._scenarios import Scenario
from ._state import EmulatorConfig

__all__ = ["FragmentEncoder", "send_completion", "send_json", "send_stream", "usage"]

_BATCH = 512  # chunks per write when there is no token delay
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_DONE = b"data: [DONE]\n\n"
_Json = dict[str, Any]


class FragmentEncoder:
    """JSON-encode a token, with a bounded cache: derived replies reuse a small vocabulary."""

    _MAX = 50_000

    def __init__(self) -> None:
        self._cache: dict[str, bytes] = {}

    def __call__(self, fragment: str) -> bytes:
        cached = self._cache.get(fragment)
        if cached is None:
            cached = json.dumps(fragment, ensure_ascii=False).encode()
            if len(self._cache) < self._MAX:
                self._cache[fragment] = cached
        return cached


def usage(prompt: int, cached: int, completion: int) -> _Json:
    """The ``usage`` object, with the cached part of the prompt."""
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


async def send_json(rec: RecordedRequest, send: Send, content: Any, status: int = 200,
                    headers: dict[str, str] | None = None) -> None:
    """Send a whole JSON response and record its status."""
    rec.status = status
    await JSONResponse(content, status, headers=headers)({"type": "http"}, _no_receive, send)


async def send_completion(call: Call, sc: Scenario, cfg: EmulatorConfig,
                          replies: Sequence[Reply], meta: _Json, usage: _Json) -> None:
    """Answer a non-streaming request after as long as the stream would have taken."""
    first = sc.delay if sc.name == "slow_first_token" else cfg.first_token_delay
    per_token = sc.delay if sc.name == "token_delay" else cfg.token_delay
    wait = (first or 0.0) + (per_token or 0.0) * max(r.completion_tokens for r in replies)
    if wait > 0:
        await asyncio.sleep(wait)
    if sc.name == "drop":
        await close_connection(call)
    if sc.name == "error_event":
        call.completed = True
        await send_json(call.rec, call.send, {"message": sc.message}, 500)
        return
    choices = []
    for i, r in enumerate(replies):
        msg: _Json = {"role": "assistant", "content": None if r.tool_call else r.content}
        if r.tool_call is not None:
            tc = r.tool_call
            msg["tool_calls"] = [{"id": tc.id, "type": "function",
                                  "function": {"name": tc.name, "arguments": tc.arguments}}]
        choices.append({"index": i, "message": msg, "logprobs": None,
                        "finish_reason": r.finish_reason})
        call.rec.chunks_sent += len(r.tool_call.fragments if r.tool_call else r.fragments)
    out = {**meta, "object": "chat.completion", "choices": choices, "usage": usage}
    call.completed = True
    await send_json(call.rec, call.send, out)


async def send_stream(call: Call, sc: Scenario, cfg: EmulatorConfig, reply: Reply,
                      meta: _Json, usage: _Json | None, first_content: str | None,
                      encode: FragmentEncoder) -> None:
    """Stream one reply as SSE; ``usage`` is sent (in its own last chunk) unless ``None``."""
    rec, send = call.rec, call.send
    first_delay = sc.delay if sc.name == "slow_first_token" else cfg.first_token_delay
    delay = (sc.delay if sc.name == "token_delay" else cfg.token_delay) or 0.0
    head = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))[:-1]
    end = ',"usage":null}\n\n' if usage is not None else "}\n\n"
    if reply.tool_call is not None:
        tc = reply.tool_call
        delta: _Json = {"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": tc.id, "type": "function",
             "function": {"name": tc.name, "arguments": ""}}]}
        prefix = head + ',"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":'
        suffix = "}}]},\"finish_reason\":null}]" + end
        frags: Sequence[str] = tc.fragments
    else:
        delta = {"role": "assistant", "content": first_content}
        prefix = head + ',"choices":[{"index":0,"delta":{"content":'
        suffix = '},"finish_reason":null}]' + end
        frags = reply.fragments
    first = _event(meta, [{"index": 0, "delta": delta, "finish_reason": None}], usage)
    pre, suf = b"data: " + prefix.encode(), suffix.encode()
    limit = len(frags)
    if sc.name in ("drop", "error_event"):
        limit = min(limit, sc.after_chunks or 0)

    rec.status = 200
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    loop = asyncio.get_running_loop()
    if first_delay:
        await asyncio.sleep(first_delay)
    parts: list[bytes] = [first]
    i, t0 = 0, loop.time()
    while i < limit:
        if delay:  # send every chunk that is due, so a late wake-up catches up
            due = t0 + i * delay
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
                now = loop.time()
            j = min(limit, max(i + 1, int((now - t0) / delay) + 1))
        else:
            j = min(limit, i + _BATCH)
        for frag in frags[i:j]:
            parts += (pre, encode(frag), suf)
        if call.disconnected:
            return
        rec.chunks_sent += j - i
        i = j
        await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
        parts = []
        if not delay and i < limit:
            await asyncio.sleep(0)  # let the disconnect watcher run between batches
    if sc.name == "drop":
        if parts:
            await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
        await close_connection(call)
    if sc.name == "error_event":
        err = {"error": {"message": sc.message, "type": "server_error", "code": 500}}
        parts.append(b"data: " + json.dumps(err, ensure_ascii=False).encode() + b"\n\n")
    else:
        parts.append(_event(
            meta, [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}], usage))
        if usage is not None:
            parts.append(_event(meta, [], usage, final=True))
        parts.append(_DONE)
    call.completed = True
    await send({"type": "http.response.body", "body": b"".join(parts), "more_body": False})


def _event(meta: _Json, choices: list[_Json], usage: _Json | None, final: bool = False) -> bytes:
    obj: _Json = {**meta, "choices": choices}
    if usage is not None:
        obj["usage"] = usage if final else None
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
