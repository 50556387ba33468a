"""Server-Sent Events for the faces that answer events of their own making: the
closing response (``ClosingEventStream``) and one event's bytes."""

from __future__ import annotations

from ..event_stream import EVENT_STREAM, ClosingEventStream

__all__ = ["EVENT_STREAM", "ClosingEventStream", "sse_data"]


def sse_data(payload: bytes) -> bytes:
    """One SSE event carrying ``payload`` (JSON without newlines) as its data."""
    return b"data: " + payload + b"\n\n"
