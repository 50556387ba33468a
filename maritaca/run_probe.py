"""Check that two ways of streaming a run report the same, as callback handlers see it.

For code that re-does a langchain-core run a cheaper way and must check once (at import)
that it still reports what langchain-core reports: ChatMaritaca's direct model run, the
chains' direct stream. ``Recorder`` keeps every callback with its arguments, ``plain``
turns what was seen into comparable data (run ids numbered in order of appearance), and
``reports_match`` runs the cases sync and async both ways and compares them. Tracing to
LangSmith is off for these runs; the async ones run on an event loop of their own, in a
short-lived thread (an importer inside a running loop could not start another).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langsmith import tracing_context
from pydantic import BaseModel

__all__ = ["Recorder", "async_reports_match", "plain", "reports_match"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")  # in reprs: where an object happens to live
# runs(stream): calls stream(...) for each of its cases, returns what it saw (as plain data)
Runs = Callable[[Callable[..., list[Any]]], list[Any]]


# the callbacks a Recorder keeps, and the name it keeps each under
_EVENTS = {"on_chain_start": "chain start", "on_chain_end": "chain end",
           "on_chain_error": "chain error", "on_chat_model_start": "model start",
           "on_llm_new_token": "token", "on_llm_end": "model end",
           "on_llm_error": "model error"}


class Recorder(BaseCallbackHandler):
    """Every chain and chat-model callback, with its arguments (run in place)."""

    run_inline = True

    def __init__(self) -> None:
        self.events: list[Any] = []


def _recording(event: str) -> Callable[..., None]:
    def record(self: Recorder, *args: Any, **kwargs: Any) -> None:
        self.events.append((event, args, kwargs))

    return record


for _method, _event in _EVENTS.items():
    setattr(Recorder, _method, _recording(_event))


def plain(value: Any, seen: dict[str, int] | None = None) -> Any:
    """``value`` as plain data (pydantic models as their type name and fields, errors as
    their repr), each run id replaced by its order of appearance, object addresses
    left out."""
    seen = {} if seen is None else seen
    if isinstance(value, UUID | str):
        text = _ADDRESS.sub(" at 0x", str(value))
        return _UUID.sub(lambda m: f"#{seen.setdefault(m.group(), len(seen))}", text)
    if isinstance(value, BaseModel):
        return type(value).__name__, plain(dict(value), seen)
    if isinstance(value, dict):
        return {key: plain(item, seen) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item, seen) for item in value]
    return plain(repr(value), seen) if isinstance(value, BaseException) else value


def reports_match(runs: Runs, direct: Callable[..., Iterator[Any]],
                  reference: Callable[..., Iterator[Any]],
                  adirect: Callable[..., AsyncIterator[Any]],
                  areference: Callable[..., AsyncIterator[Any]]) -> bool:
    """Whether ``runs`` sees the same with ``direct`` as with ``reference`` (sync
    streams) and with ``adirect`` as with ``areference`` (async ones); False also when
    anything fails."""
    try:
        if _quiet(lambda: runs(lambda *args: list(direct(*args)))) \
                != _quiet(lambda: runs(lambda *args: list(reference(*args)))):
            return False
        return async_reports_match(runs, adirect, areference)
    except Exception:  # noqa: BLE001 - any failure means: not the same
        return False


def async_reports_match(runs: Runs, adirect: Callable[..., AsyncIterator[Any]],
                        areference: Callable[..., AsyncIterator[Any]]) -> bool:
    """``reports_match`` for async streams only."""
    seen = _in_thread(lambda: _async_runs(runs, adirect))
    return seen is not None and seen == _in_thread(lambda: _async_runs(runs, areference))


def _quiet(run: Callable[[], Any]) -> Any:
    with tracing_context(enabled=False):
        return run()


def _async_runs(runs: Runs, astream: Callable[..., AsyncIterator[Any]]) -> list[Any]:
    """``runs`` with ``astream``, each stream collected on one event loop of its own."""
    loop = asyncio.new_event_loop()

    async def collect(stream: AsyncIterator[Any]) -> list[Any]:
        return [item async for item in stream]

    try:
        return runs(lambda *args: loop.run_until_complete(collect(astream(*args))))
    finally:
        loop.close()


def _in_thread(run: Callable[[], Any]) -> Any:
    """``run()``'s result, quietly, in a short-lived thread; None if it fails."""
    result: list[Any] = [None]

    def target() -> None:
        try:
            result[0] = _quiet(run)
        except Exception:  # noqa: BLE001 - None: not the same
            result[0] = None

    thread = threading.Thread(target=target, name="maritaca-run-probe")
    thread.start()
    thread.join()
    return result[0]
