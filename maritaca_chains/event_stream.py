"""A streamed response that notices the client hanging up, even while nothing is sent,
and closes its body generator however it ends (so the run, and its upstream request,
stop at once).

Use it for every Server-Sent Events answer of our own making: the faces' streams and
the resumable runs' readers (a quiet run must still notice its reader leaving).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["EVENT_STREAM", "ClosingEventStream"]

EVENT_STREAM = "text/event-stream"
_NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClosingEventStream(StreamingResponse):
    """``text/event-stream`` from ``body``; a hang-up cancels it and closes ``body``."""

    def __init__(self, body: AsyncIterator[bytes],
                 headers: Mapping[str, str] | None = None) -> None:
        self.events = body
        super().__init__(body, media_type=EVENT_STREAM,
                         headers={**_NO_BUFFERING, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:
                async def stream() -> None:
                    await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client went away mid-write
        finally:
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
