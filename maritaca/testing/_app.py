"""The emulator's ASGI app: Maritaca's ``/chat/completions`` and ``/models``, plus control
routes under ``/_emulator/`` for the subprocess mode.

Responses that take time (streams, delayed answers) run as a task beside a watcher that
awaits ``receive()``: uvicorn answers ``http.disconnect`` as soon as the client's TCP
connection closes, and the watcher then records the disconnect and cancels the task, so
``chunks_sent`` stops at once. Streams pre-serialise everything but the token: each SSE
event is ``prefix + json(token) + suffix``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from ._records import RecordedRequest, redact_headers
from ._scenarios import ERROR_SCENARIOS, Scenario, context_detail
from ._state import EmulatorState
from ._text import resolve_model
from ._wire import Reply, plan_reply, validate

__all__ = ["EmulatorApp"]

MODELS = ("sabia-4", "sabiazinho-4", "sabia-4-thinking")
CONTEXT_LENGTH = 131_072
_BATCH = 512  # chunks per write when there is no token delay
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_DONE = b"data: [DONE]\n\n"
_Json = dict[str, Any]


class _Call:
    """One in-flight request that may be interrupted."""

    __slots__ = ("rec", "receive", "send", "task", "watcher", "completed", "server_closed",
                 "disconnected")

    def __init__(self, rec: RecordedRequest, receive: Receive, send: Send) -> None:
        self.rec = rec
        self.receive = receive
        self.send = send
        self.task: asyncio.Future[None] | None = None
        self.watcher: asyncio.Future[None] | None = None
        self.completed = False  # the last body message is being sent
        self.server_closed = False  # we closed the connection (drop, shutdown)
        self.disconnected = False

    def transport(self) -> asyncio.Transport | None:
        # uvicorn's ``send`` is a bound method of its request cycle, which holds the transport.
        return getattr(getattr(self.send, "__self__", None), "transport", None)


class EmulatorApp:
    """ASGI app over an :class:`EmulatorState`. Mount it anywhere; usually
    :class:`~maritaca.testing.MaritacaEmulator` serves it for you."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.active: set[_Call] = set()
        self._json_cache: dict[str, bytes] = {}
        self._routes: dict[str, tuple[str, Callable[..., Awaitable[None]]]] = {
            "/chat/completions": ("POST", self.chat),
            "/models": ("GET", self.models),
            "/_emulator/requests": ("GET", self.ctl_requests),
            "/_emulator/scenarios": ("POST", self.ctl_scenarios),
            "/_emulator/reset": ("POST", self.ctl_reset),
            "/_emulator/expected_text": ("POST", self.ctl_expected_text),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": kind + ".complete"})
                if kind == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        route = self._routes.get(scope["path"])
        if route is None:
            await JSONResponse({"detail": "Not Found"}, 404)(scope, receive, send)
        elif scope["method"] != route[0]:
            await JSONResponse({"detail": "Method Not Allowed"}, 405,
                               headers={"allow": route[0]})(scope, receive, send)
        else:
            await route[1](scope, receive, send)

    def abort_all(self) -> None:
        """Close every in-flight connection now (server shutdown)."""
        for call in list(self.active):
            call.server_closed = True
            transport = call.transport()
            if transport is not None:
                transport.abort()
            elif call.task is not None:
                call.task.cancel()

    # --- API routes ----------------------------------------------------------------------
    def _authorized(self, scope: Scope) -> str | None:
        """``None`` when allowed, else the 401 detail."""
        key = self.state.config.api_key
        if key is None:
            return None
        raw = next((v for k, v in scope["headers"] if k.lower() == b"authorization"), b"")
        scheme, _, given = raw.decode("latin-1").strip().partition(" ")
        if not given:
            return "Missing API key: send the header 'Authorization: Bearer <key>'"
        if scheme.lower() not in ("bearer", "key") or given.strip() != key:
            return "Invalid API key"
        return None

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        rec = self._record(scope, None)
        denied = self._authorized(scope)
        if denied:
            rec.scenario = "unauthorized"
            await self._json(rec, scope, send, {"detail": denied}, 401)
            return
        data = [{"id": m, "object": "model", "created": 1767657600, "owned_by": "maritaca"}
                for m in MODELS]
        await self._json(rec, scope, send, {"object": "list", "data": data})

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await Request(scope, receive).body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = self._record(scope, body if isinstance(body, dict) else None)
        try:
            await self._chat(rec, body, scope, receive, send)
        finally:
            rec.finished_at = time.monotonic()

    async def _chat(self, rec: RecordedRequest, body: Any, scope: Scope, receive: Receive,
                    send: Send) -> None:
        scenario = self.state.next_scenario()
        if scenario is not None and scenario.name in ERROR_SCENARIOS:
            rec.scenario = scenario.name
            await self._error(rec, scope, send, scenario)
            return
        denied = self._authorized(scope)
        if denied:
            rec.scenario = "unauthorized"
            await self._json(rec, scope, send, {"detail": denied}, 401)
            return
        problem = validate(body)
        if problem:
            rec.scenario = "invalid"
            await self._json(rec, scope, send, {"detail": problem[1]}, problem[0])
            return
        prompt_tokens, cached = self.state.prompt_usage(body["messages"])
        if prompt_tokens > CONTEXT_LENGTH:
            rec.scenario = "context_too_long"
            await self._json(rec, scope, send, {"detail": context_detail(prompt_tokens)}, 400)
            return
        scenario = scenario or Scenario.ok()
        rec.scenario = scenario.name
        cfg = self.state.config
        reply = scenario.reply if scenario.reply is not None else cfg.reply
        tokens = scenario.reply_tokens if scenario.reply_tokens is not None else cfg.reply_tokens
        replies = [plan_reply(body, reply=reply, reply_tokens=tokens, choice=i)
                   for i in range(body.get("n") or 1)]
        usage = _usage(prompt_tokens, cached, sum(r.completion_tokens for r in replies))
        meta = {"id": "chatcmpl-" + os.urandom(12).hex(), "object": "chat.completion.chunk",
                "created": int(time.time()), "model": resolve_model(body["model"], cfg.model_name_suffix)}
        call = _Call(rec, receive, send)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            first = self._first_content()
            run = self._stream(call, scenario, replies[0], meta, usage if include_usage else None, first)
        else:
            run = self._complete(call, scenario, replies, meta, usage)
        await self._watched(call, run)

    # --- responses -----------------------------------------------------------------------
    def _record(self, scope: Scope, body: _Json | None) -> RecordedRequest:
        rec = RecordedRequest(method=scope["method"], path=scope["path"], body=body,
                              headers=redact_headers(scope["headers"]),
                              started_at=time.monotonic())
        self.state.record(rec)
        return rec

    async def _json(self, rec: RecordedRequest, scope: Scope, send: Send, content: Any,
                    status: int = 200, headers: dict[str, str] | None = None) -> None:
        rec.status = status
        await JSONResponse(content, status, headers=headers)(scope, _no_receive, send)
        if rec.finished_at is None and rec.path != "/chat/completions":
            rec.finished_at = time.monotonic()

    async def _error(self, rec: RecordedRequest, scope: Scope, send: Send, sc: Scenario) -> None:
        status = sc.status or 500
        if sc.body is not None:
            content = sc.body
        elif sc.message is not None:
            content = {"message": sc.message}
        else:
            content = {"detail": sc.detail or f"HTTP {status}"}
        headers = None
        if sc.retry_after is not None:
            ra = sc.retry_after
            headers = {"retry-after": ra if isinstance(ra, str) else f"{ra:g}"}
        await self._json(rec, scope, send, content, status, headers)

    def _first_content(self) -> str | None:
        mode = self.state.config.first_delta_content
        if mode == "alternate":
            return "" if self.state.next_stream_index() % 2 == 0 else None
        return mode

    async def _watched(self, call: _Call, run: Awaitable[None]) -> None:
        """Run ``run`` as a task, cancelled the moment the client disconnects."""
        call.task = task = asyncio.ensure_future(run)
        call.watcher = watcher = asyncio.ensure_future(self._watch(call))
        self.active.add(call)
        try:
            await task
        except asyncio.CancelledError:
            if not call.disconnected:
                raise
        finally:
            self.active.discard(call)
            watcher.cancel()

    async def _watch(self, call: _Call) -> None:
        while (await call.receive())["type"] != "http.disconnect":
            pass
        if call.completed:
            return
        call.disconnected = True
        if not call.server_closed:
            call.rec.client_disconnected = True
            call.rec.disconnected_at = time.monotonic()
        if call.task is not None:
            call.task.cancel()

    async def _close(self, call: _Call) -> None:
        """Close the connection without finishing the response (the ``drop`` scenario)."""
        call.server_closed = True
        transport = call.transport()
        if transport is None:  # not uvicorn: let the server close it
            raise ConnectionAbortedError("emulator drop scenario")
        transport.close()
        await asyncio.sleep(3600)  # the watcher cancels us once uvicorn sees the close

    async def _complete(self, call: _Call, sc: Scenario, replies: Sequence[Reply], meta: _Json,
                        usage: _Json) -> None:
        cfg = self.state.config
        first = sc.delay if sc.name == "slow_first_token" else cfg.first_token_delay
        per_token = sc.delay if sc.name == "token_delay" else cfg.token_delay
        wait = (first or 0.0) + (per_token or 0.0) * max(r.completion_tokens for r in replies)
        if wait > 0:
            await asyncio.sleep(wait)
        if sc.name == "drop":
            await self._close(call)
        scope = {"type": "http"}
        if sc.name == "error_event":
            call.completed = True
            await self._json(call.rec, scope, call.send, {"message": sc.message}, 500)
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
        await self._json(call.rec, scope, call.send, out)

    async def _stream(self, call: _Call, sc: Scenario, reply: Reply, meta: _Json,
                      usage: _Json | None, first_content: str | None) -> None:
        cfg, rec, send = self.state.config, call.rec, call.send
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
        first = self._event(meta, [{"index": 0, "delta": delta, "finish_reason": None}], usage)
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
        enc = self._encode
        i, t0 = 0, loop.time()
        while i < limit:
            if delay:
                due = t0 + i * delay
                now = loop.time()
                if due > now:
                    await asyncio.sleep(due - now)
                    now = loop.time()
                j = min(limit, max(i + 1, int((now - t0) / delay) + 1))
            else:
                j = min(limit, i + _BATCH)
            for frag in frags[i:j]:
                parts += (pre, enc(frag), suf)
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
            await self._close(call)
        if sc.name == "error_event":
            err = {"error": {"message": sc.message, "type": "server_error", "code": 500}}
            parts.append(b"data: " + json.dumps(err, ensure_ascii=False).encode() + b"\n\n")
        else:
            parts.append(self._event(
                meta, [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}], usage))
            if usage is not None:
                parts.append(self._event(meta, [], usage, final=True))
            parts.append(_DONE)
        call.completed = True
        await send({"type": "http.response.body", "body": b"".join(parts), "more_body": False})

    @staticmethod
    def _event(meta: _Json, choices: list[_Json], usage: _Json | None, final: bool = False) -> bytes:
        obj: _Json = {**meta, "choices": choices}
        if usage is not None:
            obj["usage"] = usage if final else None
        return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"

    def _encode(self, fragment: str) -> bytes:
        cached = self._json_cache.get(fragment)
        if cached is None:
            cached = json.dumps(fragment, ensure_ascii=False).encode()
            if len(self._json_cache) < 50_000:
                self._json_cache[fragment] = cached
        return cached

    # --- control routes (subprocess mode) ------------------------------------------------
    async def ctl_requests(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = [r.to_dict() for r in self.state.requests()]
        await JSONResponse(data)(scope, receive, send)

    async def ctl_scenarios(self, scope: Scope, receive: Receive, send: Send) -> None:
        payload = await Request(scope, receive).json()
        items = payload if isinstance(payload, list) else [payload]
        try:
            scenarios = [Scenario.from_dict(d) for d in items]
        except (TypeError, ValueError) as exc:
            await JSONResponse({"detail": str(exc)}, 422)(scope, receive, send)
            return
        self.state.enqueue(scenarios)
        await JSONResponse({"queued": len(scenarios)})(scope, receive, send)

    async def ctl_reset(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.state.reset()
        await JSONResponse({"reset": True})(scope, receive, send)

    async def ctl_expected_text(self, scope: Scope, receive: Receive, send: Send) -> None:
        payload = await Request(scope, receive).json()
        text = self.state.expected_text(payload["messages"], payload.get("reply_tokens"))
        await JSONResponse({"text": text})(scope, receive, send)


def _usage(prompt: int, cached: int, completion: int) -> _Json:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
