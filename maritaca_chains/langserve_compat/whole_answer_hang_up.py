"""LangServe's ``/invoke`` and ``/batch`` answer once the run is over, and nothing in
them watches the client meanwhile: one that hangs up (a timeout, a closed tab) left the
run, and its call to Maritaca, going on to the end, and paid for. ``StopRunOnHangUp``
(pure ASGI) runs those routes until the client hangs up, then cancels them, as a
stream's hang-up does (``event_stream.before_hang_up``). It relies on nothing of
LangServe's but those routes' paths; ``tests/test_langserve_compat.py`` checks that
LangServe still leaves the hang-up unwatched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, MutableMapping
from typing import Any

from ..event_stream import ClientHungUp, before_hang_up

__all__ = ["StopRunOnHangUp"]

Message = MutableMapping[str, Any]
_WHOLE_ANSWERS = ("invoke", "batch")


class StopRunOnHangUp:
    """Pure ASGI: a ``POST /<chain>/invoke`` or ``/batch`` (also under ``/c/<hash>/``) is
    cancelled when its client hangs up; ``names``: the chains' names."""

    def __init__(self, app: Any, names: Iterable[str]) -> None:
        self.app, self.names = app, frozenset(names)

    def _whole_answer(self, scope: MutableMapping[str, Any]) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        parts = scope["path"].strip("/").split("/")
        return parts[0] in self.names and parts[-1] in _WHOLE_ANSWERS and (
            len(parts) == 2 or (len(parts) == 4 and parts[1] == "c"))

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if not self._whole_answer(scope):
            await self.app(scope, receive, send)
            return
        body_read, gone = asyncio.Event(), asyncio.Event()

        async def app_receive() -> Message:
            if body_read.is_set():  # only the hang-up is left to hear, and the watch hears it
                await gone.wait()
                return {"type": "http.disconnect"}
            message: Message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                body_read.set()
            return message

        async def watch() -> Message:  # what before_hang_up waits on, once the body is in
            await body_read.wait()
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            return message

        try:
            await before_hang_up(self.app(scope, app_receive, send), watch)
        except ClientHungUp:
            return  # nobody reads an answer now; the run stopped with the request
