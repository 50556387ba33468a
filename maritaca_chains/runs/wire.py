"""How a run's events are written: the protocol its readers speak, one object per run.

The runner stores each event as the bytes a reader receives; a ``RunWire`` makes those
bytes. ``LangServeWire`` (the default) writes LangServe's ``/stream`` SSE with ids, as
``/<chain>/runs/<id>/stream`` serves it; a face with its own protocol (the AI SDK's UI
message stream, ``faces.ai_sdk``) passes its own wire to ``RunManager.start``::

    await manager.start(info, chain, value, config, wire=MyWire())

A wire may add callbacks to the run (``callbacks(emit)``): they can write events of
their own between chunks with ``await emit(render)``, ``render`` making the block from
the event id it gets (map-reduce progress does so).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from langchain_core.callbacks import BaseCallbackHandler
from langserve.serialization import WellKnownLCSerializer

from ..error_responses import sse_error_data
from ..messages import DEFAULT_LANGUAGE, Language, say
from .events import run_error_data, sse_block

__all__ = ["BY_DELETE", "CANCELLED", "SHUTTING_DOWN", "Emit", "LangServeWire", "Reason",
           "RunWire", "said"]


class Reason(str):
    """Why a run was cancelled: its English words (what the logs say, and what it equals)
    and its code in the message catalogue (``cancel_reason.<code>``), so a wire can say
    it in its reader's language (``said``)."""

    code: str
    values: dict[str, object]

    def __new__(cls, code: str, **values: object) -> Reason:
        reason = super().__new__(cls, say(f"cancel_reason.{code}", "en", **values))
        reason.code, reason.values = code, values
        return reason


def said(why: str, lang: Language) -> str:
    """``why`` in ``lang`` (a plain string, not a ``Reason``, as it is)."""
    if isinstance(why, Reason):
        return say(f"cancel_reason.{why.code}", lang, **why.values)
    return why


BY_DELETE = Reason("deleted")  # the default: DELETE on the run, or a replica told to
CANCELLED = Reason("cancelled")  # no reason recorded
# why a run is cancelled when its server shuts down (another replica can run it again)
SHUTTING_DOWN = Reason("shutting_down")

# ``await emit(render)``: write one more event, ``render(event_id)`` making its bytes
Emit = Callable[[Callable[[int], bytes]], Awaitable[None]]


class RunWire(Protocol):
    """The bytes of a run's events (each method gets the event's id)."""

    def callbacks(self, emit: Emit) -> list[BaseCallbackHandler]:
        """Handlers to add to the run's callbacks (may write events through ``emit``)."""
        ...

    def opening(self, event_id: int, run_id: str) -> bytes:
        """The first event."""
        ...

    def chunk(self, event_id: int, chunk: Any) -> bytes:
        """One chunk of the chain's output."""
        ...

    def ended(self, event_id: int) -> bytes:
        """The last event of a run that ended well."""
        ...

    def failed(self, event_id: int, exc: BaseException) -> bytes:
        """The last event of a run that raised ``exc``."""
        ...

    def cancelled(self, event_id: int, why: str) -> bytes:
        """The last event of a cancelled run (``why``: by whom, in words;
        ``SHUTTING_DOWN`` when the server stops: another replica can run it again)."""
        ...


_serializer = WellKnownLCSerializer()  # LangServe's, so data events match /stream's


class LangServeWire:
    """LangServe's ``/stream`` SSE: ``metadata``, ``data``..., then ``end`` or ``error``;
    the error messages in ``lang`` (the starting request's)."""

    def __init__(self, lang: Language = DEFAULT_LANGUAGE) -> None:
        self.lang = lang

    def callbacks(self, emit: Emit) -> list[BaseCallbackHandler]:
        return []

    def opening(self, event_id: int, run_id: str) -> bytes:
        return sse_block(event_id, "metadata", f'{{"run_id": "{run_id}"}}')

    def chunk(self, event_id: int, chunk: Any) -> bytes:
        return sse_block(event_id, "data", _serializer.dumps(chunk).decode())

    def ended(self, event_id: int) -> bytes:
        # an empty data line: browsers never dispatch an event without data
        return sse_block(event_id, "end", "")

    def failed(self, event_id: int, exc: BaseException) -> bytes:
        return sse_block(event_id, "error", sse_error_data(exc, self.lang).decode())

    def cancelled(self, event_id: int, why: str) -> bytes:
        if why == SHUTTING_DOWN:
            return sse_block(event_id, "error", run_error_data(
                503, "server_shutting_down", say("run_shut_down", self.lang)))
        return sse_block(event_id, "error", run_error_data(
            409, "cancelled", say("run_cancelled", self.lang, why=said(why, self.lang))))
