"""The emulator's ASGI app: routing, auth and the request checks of Maritaca's
``/chat/completions`` and ``/models``, plus control routes under ``/_emulator/`` for the
subprocess mode.

Use :class:`EmulatorApp` through :class:`~maritaca.testing.MaritacaEmulator`; mount it
yourself only to serve the emulator some other way. What to answer is planned in
``_replies`` and written on the wire by ``_responses``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from ..models import catalogue_names
from ._calls import Call, run_watched
from ._records import RecordedRequest, redact_headers
from ._replies import model_limits, plan_reply
from ._responses import FragmentEncoder, send_completion, send_json, send_stream, usage
from ._scenarios import ERROR_SCENARIOS, Scenario, context_detail
from ._state import EmulatorState
from ._text import resolve_model
from ._validation import validate

__all__ = ["EmulatorApp"]

_CREATED = 1767657600  # 2026-01-06, the date of the models' dated names


class EmulatorApp:
    """ASGI app over an :class:`EmulatorState`. Mount it anywhere; usually
    :class:`~maritaca.testing.MaritacaEmulator` serves it for you."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.active: set[Call] = set()
        self._encode = FragmentEncoder()
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
            call.abort()

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
        try:
            denied = self._authorized(scope)
            if denied:
                rec.scenario = "unauthorized"
                await send_json(rec, send, {"detail": denied}, 401)
                return
            data = [{"id": m, "object": "model", "created": _CREATED, "owned_by": "maritaca"}
                    for m in catalogue_names()]
            await send_json(rec, send, {"object": "list", "data": data})
        finally:
            rec.finished_at = time.monotonic()

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
            await _send_error(rec, send, scenario)
            return
        denied = self._authorized(scope)
        if denied:
            rec.scenario = "unauthorized"
            await send_json(rec, send, {"detail": denied}, 401)
            return
        problem = validate(body)
        if problem:
            rec.scenario = "invalid"
            await send_json(rec, send, {"detail": problem[1]}, problem[0])
            return
        prompt_tokens, cached = self.state.prompt_usage(body["messages"])
        limit = model_limits(body["model"]).context_length
        if prompt_tokens > limit:
            rec.scenario = "context_too_long"
            await send_json(rec, send, {"detail": context_detail(prompt_tokens, limit)}, 400)
            return
        scenario = scenario or Scenario.ok()
        rec.scenario = scenario.name
        cfg = self.state.config
        reply = scenario.reply if scenario.reply is not None else cfg.reply
        tokens = scenario.reply_tokens if scenario.reply_tokens is not None else cfg.reply_tokens
        replies = [plan_reply(body, reply=reply, reply_tokens=tokens, choice=i)
                   for i in range(body.get("n") or 1)]
        total = usage(prompt_tokens, cached, sum(r.completion_tokens for r in replies))
        meta = {"id": "chatcmpl-" + os.urandom(12).hex(), "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": resolve_model(body["model"], cfg.model_name_suffix)}
        call = Call(rec, receive, send)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            run = send_stream(call, scenario, cfg, replies[0], meta,
                              total if include_usage else None, self._first_content(),
                              self._encode)
        else:
            run = send_completion(call, scenario, cfg, replies, meta, total)
        await run_watched(call, run, self.active)

    def _record(self, scope: Scope, body: dict[str, Any] | None) -> RecordedRequest:
        rec = RecordedRequest(method=scope["method"], path=scope["path"], body=body,
                              headers=redact_headers(scope["headers"]),
                              started_at=time.monotonic())
        self.state.record(rec)
        return rec

    def _first_content(self) -> str | None:
        mode = self.state.config.first_delta_content
        if mode == "alternate":
            return "" if self.state.next_stream_index() % 2 == 0 else None
        return mode

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


async def _send_error(rec: RecordedRequest, send: Send, sc: Scenario) -> None:
    """The HTTP error an error scenario stands for."""
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
    await send_json(rec, send, content, status, headers)
