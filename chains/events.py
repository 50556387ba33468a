"""``astream_events`` (v2) with the events read where the run makes them.

Use ``astream_events(runnable, value, config, **filters)`` where a server streams a
run's events and pays for every layer per event: it yields what
``runnable.astream_events(value, config, version="v2", **filters)`` yields, in the same
order, and ends, fails and stops the same way.

langchain-core runs the chain in a task whose callback handler puts each event on a
stream made for a reader on another thread (``call_soon_threadsafe`` per event, an
``asyncio.Queue``), and hands each event up through three async generators. Here the
same handler (``chains._lcel_private.events_handler``) puts its events on a deque that
one generator reads, waking it with one future when it waits: about 3.5% of a short
``/stream_events`` request's instructions (BENCHMARKS.md, issue 26, fifteenth pass). A
callback run on a worker thread still hands its event over through the event loop.

``in_place()`` says whether this path is used: it checks once, the first time it is
asked, that probe chains (a direct chain and a plain LCEL one; a good input, a failing
one, a filter) report exactly the same events both ways. Otherwise, or if the handler's
internals are gone, ``astream_events`` is langchain-core's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from threading import get_ident
from typing import Any

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config

from maritaca.run_probe import async_reports_match, plain

from . import _lcel_private as lcel
from ._direct import DirectChain
from ._direct_probe import prepare_probe, probe_prompt, probe_values
from ._parsers import InlineStrOutputParser

__all__ = ["astream_events", "in_place"]


class _Events:
    """Where the handler sends its events: ``ready``, and a future the reader waits on
    while it is empty. Sent from the event loop's thread, an event is there at once;
    from another thread, it comes through the loop, and so does every event after it
    (one sent on the loop's thread must not pass one still on its way). An event sent
    once the run has ended is dropped, as langchain-core's reader never reads it."""

    __slots__ = ("closed", "crossed", "loop", "ready", "thread", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.thread = loop, get_ident()
        self.ready: deque[Any] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = self.crossed = False

    def send_nowait(self, event: Any) -> None:
        if self.crossed or get_ident() != self.thread:  # a worker thread's, or after one
            self.crossed = True
            self.loop.call_soon_threadsafe(self._put, event)
            return
        self._put(event)

    async def aclose(self) -> None:
        """The run has ended: once the events sent before are there, the reader stops."""
        if self.crossed:  # behind what other threads have sent
            self.loop.call_soon_threadsafe(self._close)
        else:
            self._close()

    def next_event(self) -> asyncio.Future[None]:
        """A future done when there is an event to read, or the run has ended."""
        self.waiter = self.loop.create_future()
        return self.waiter

    def _put(self, event: Any) -> None:
        if not self.closed:
            self.ready.append(event)
            self._wake()

    def _close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _with_handler(config: RunnableConfig, handler: Any) -> RunnableConfig:
    """``config`` with ``handler`` among its callbacks, as langchain-core adds it."""
    callbacks = config.get("callbacks")
    if callbacks is None:
        config["callbacks"] = [handler]
    elif isinstance(callbacks, list):
        config["callbacks"] = [*callbacks, handler]
    elif isinstance(callbacks, BaseCallbackManager):
        callbacks = callbacks.copy()
        callbacks.add_handler(handler, inherit=True)
        config["callbacks"] = callbacks
    else:
        raise ValueError(f"Unexpected type for callbacks: {callbacks}.")
    return config


async def _events_in_place(runnable: Runnable[Any, Any], value: Any, config: RunnableConfig,
                           filters: dict[str, Any]) -> AsyncIterator[Any]:
    """langchain-core's ``_astream_events_implementation_v2``, reading ``_Events``."""
    events = _Events(asyncio.get_running_loop())
    handler = lcel.events_handler(events, filters)
    config = _with_handler(ensure_config(config), handler)
    run_id = config["run_id"]  # type: ignore[typeddict-item]

    async def run() -> None:
        try:
            async with aclosing(runnable.astream(value, config)) as stream:  # type: ignore[type-var]
                async for _ in handler.tap_output_aiter(run_id, stream):
                    pass
        finally:
            await events.aclose()

    task = asyncio.create_task(run())
    ready, root = events.ready, None
    try:
        while True:
            if ready:
                event = ready.popleft()
                if root is None:  # the root run's start: its input as given
                    event["data"]["input"] = value
                    root = event["run_id"]
                elif event["run_id"] == root and event["event"].endswith("_end") \
                        and "input" in event["data"]:
                    del event["data"]["input"]  # already in its start
                yield event
            elif events.closed:
                break
            else:
                await events.next_event()
    except asyncio.CancelledError as cancelled:
        task.cancel(cancelled.args[0] if cancelled.args else None)
        raise
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # its cleanup, and its error if it failed


def astream_events(runnable: Runnable[Any, Any], value: Any, config: RunnableConfig,
                   **filters: Any) -> AsyncIterator[Any]:
    """``runnable.astream_events(value, config, version="v2", **filters)``'s events (see
    the module docstring). ``config`` must carry the root run's ``run_id``, as every
    LangServe run's does; ``filters`` are ``include_names`` and the rest."""
    if config.get("run_id") is None:
        raise ValueError("astream_events here needs the root run's run_id in its config")
    if not in_place():
        return runnable.astream_events(value, config, version="v2", **filters)
    return _events_in_place(runnable, value, config, filters)


def _probe_runs(stream: Callable[..., list[Any]]) -> list[Any]:
    """What ``stream(chain, value, config, filters)`` yields for each probe case."""
    seen = []
    for value, filters, direct in (
            (probe_values(), {}, True), (probe_values(valid=False), {}, True),
            (probe_values(), {"include_types": ["chat_model"]}, True),
            (probe_values(), {"exclude_names": ["probe"]}, False)):
        model = GenericFakeChatModel(messages=iter([AIMessage("Era uma vez no Brasil")]))
        inner = probe_prompt() | model | InlineStrOutputParser()
        chain: Runnable[Any, Any] = DirectChain(name="probe", inner=inner,
                                                prepare=prepare_probe) if direct else inner
        config = {"tags": ["probe"], "metadata": {"probe": 1},
                  "run_id": "00000000-0000-4000-8000-000000000001"}
        events: list[Any] = []
        try:
            events.extend(stream(chain, value, config, filters))
        except ValueError as error:
            events.append(error)
        seen.append(plain(events))
    return seen


@functools.cache
def in_place() -> bool:
    """Whether ``astream_events`` reads the events in place (checked once, see above)."""
    return async_reports_match(
        _probe_runs,
        lambda chain, value, config, filters: _events_in_place(chain, value, config, filters),
        lambda chain, value, config, filters: chain.astream_events(
            value, config, version="v2", **filters))
