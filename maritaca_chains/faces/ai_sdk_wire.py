"""The Vercel AI SDK's UI message stream (protocol v1), rendered: one ``AiSdkWire`` per
answer, written into a resumable run (``runs.RunWire``) so a reader can replay it.

Each event is an SSE ``data:`` line with one JSON part, in this order::

    {"type": "start", "messageId": "msg-<run id>"}
    {"type": "data-<event>", "id": "<event>", "data": {...}}   # the chain's custom events
                                                              # (summarize: map-reduce progress)
    {"type": "text-start", "id": "text"}
    {"type": "text-delta", "id": "text", "delta": "..."}       # one per chain chunk
    {"type": "text-end", "id": "text"}
    {"type": "data-usage", "id": "usage", "data": {"input_tokens", "output_tokens",
                                                  "total_tokens", "cached_input_tokens",
                                                  "calls", "cost_brl"}}  # the run's ledger
    {"type": "data-truncated", "id": "truncated", "data": {"max_tokens", "message"}}  # if cut
    {"type": "finish"}
    [DONE]

A failure ends the text, then sends ``{"type": "error", "errorText": "..."}`` naming the
cause (``error_responses``) and ``[DONE]``. Only fields AI SDK 5 knows are sent (its
parts are strict objects), so the ``ai`` packages from 5 on read it.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

from ..error_responses import describe_error
from ..ledger import Ledger
from ..messages import DEFAULT_LANGUAGE, Language, say
from ..runs.wire import SHUTTING_DOWN, Emit, said

__all__ = ["DONE", "UI_MESSAGE_STREAM_HEADERS", "AiSdkWire", "error_part", "part"]

# What marks a response as the UI message stream (``x-vercel-ai-ui-message-stream: v1``)
UI_MESSAGE_STREAM_HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
DONE = b"data: [DONE]\n\n"
_TEXT_START = b'data: {"type":"text-start","id":"text"}\n\n'
_TEXT_END = b'data: {"type":"text-end","id":"text"}\n\n'
_DELTA_HEAD = b'data: {"type":"text-delta","id":"text","delta":'
_DELTA_TAIL = b"}\n\n"


def part(payload: dict[str, Any]) -> bytes:
    """One UI message stream part as an SSE event."""
    return b"data: " + orjson.dumps(payload, default=str) + b"\n\n"


def error_part(message: str) -> bytes:
    """An ``error`` part and the stream's end."""
    return part({"type": "error", "errorText": message}) + DONE


class _CustomEvents(AsyncCallbackHandler):
    """Writes every custom event the chain dispatches as a ``data-<name>`` part (the
    same id each time, so the client updates one part: a progress bar, not a list)."""

    run_inline = True
    ignore_llm = ignore_chat_model = ignore_chain = ignore_retriever = True
    ignore_agent = ignore_retry = True

    def __init__(self, emit: Emit) -> None:
        self.emit = emit

    async def on_custom_event(self, name: str, data: Any, *, run_id: UUID,
                              **kwargs: Any) -> None:
        block = part({"type": f"data-{name}", "id": name, "data": data})
        await self.emit(lambda _event_id: block)


class AiSdkWire:
    """One answer's parts (see the module doc); usage and the cut come from the run's
    ``ledger``."""

    def __init__(self, ledger: Ledger, lang: Language = DEFAULT_LANGUAGE) -> None:
        self.ledger = ledger
        self.lang = lang  # of the request that started the answer: its error parts
        self._text_open = False

    def callbacks(self, emit: Emit) -> list[BaseCallbackHandler]:
        return [_CustomEvents(emit)]

    def opening(self, event_id: int, run_id: str) -> bytes:
        return part({"type": "start", "messageId": f"msg-{run_id}"})

    def chunk(self, event_id: int, chunk: Any) -> bytes:
        text = chunk if isinstance(chunk, str) else str(chunk)
        delta = _DELTA_HEAD + orjson.dumps(text) + _DELTA_TAIL
        if self._text_open:
            return delta
        self._text_open = True
        return _TEXT_START + delta

    def _close_text(self) -> bytes:
        if not self._text_open:
            return b""
        self._text_open = False
        return _TEXT_END

    def ended(self, event_id: int) -> bytes:
        run = self.ledger.last
        closing = self._close_text()
        if run is not None:
            closing += part({"type": "data-usage", "id": "usage", "data": run.usage()})
        if run is not None and run.cut:
            closing += part({"type": "data-truncated", "id": "truncated", "data": {
                "max_tokens": run.max_tokens, "message": run.cut_note()}})
        return closing + b'data: {"type":"finish"}\n\n' + DONE

    def failed(self, event_id: int, exc: BaseException) -> bytes:
        return self._close_text() + error_part(describe_error(exc, self.lang)["message"])

    def cancelled(self, event_id: int, why: str) -> bytes:
        if why == SHUTTING_DOWN:
            return self._close_text() + error_part(say("answer_shut_down", self.lang))
        return self._close_text() + error_part(
            say("answer_cancelled", self.lang, why=said(why, self.lang)))

