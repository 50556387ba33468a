"""``astream_events`` (version v2) run in the caller's task: the same events, without a
second task and a queue between the chain and its reader.

langchain-core's ``astream_events`` runs the chain in a task of its own and hands every
event to the reader through a queue: a ``call_soon_threadsafe`` and a queue put per
event, and a task switch per burst of them (a token makes four). Here the chain's steps
are run by hand in the reader's task (in a context of their own, as a task's are), its
events are kept as langchain-core's handler makes them, and the ones kept go out
before the chain waits (for the upstream, mostly) and after each of its chunks: none
later than the queue would deliver it, the start events before the wait for the first
token. On an error, the events made before it go out first, then the error is raised;
closed early, the chain is cancelled where it waits, as langchain-core cancels its
task. It saves a few percent of a short answer's server CPU on ``/stream_events``
(BENCHMARKS.md, issue 26, twelfth pass).

``astream_events`` takes this path when ``in_task()`` is true: checked once, on first
use (it blocks for about 0.1 s, so a server asks at startup), that the handler is there (``chains._lcel_private``) and that a probe chain's
events, both ways and with filters, are exactly langchain-core's; otherwise it calls the
runnable's own ``astream_events``. Use it where a server streams a chain's events.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Generator
from contextlib import aclosing
from typing import Any, cast

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config

from . import _lcel_private as lcel

__all__ = ["astream_events", "in_task"]

_FILTERS = frozenset({"include_names", "include_types", "include_tags",
                      "exclude_names", "exclude_types", "exclude_tags"})


def astream_events(runnable: Runnable[Any, Any], value: Any,
                   config: RunnableConfig | None = None,
                   **filters: Any) -> AsyncIterator[dict[str, Any]]:
    """``runnable.astream_events(value, config, version="v2", **filters)``, in the
    caller's task when it is checked to give the same events."""
    if _FILTERS.issuperset(filters) and in_task():
        return _events(runnable, value, config, filters)
    return cast(AsyncIterator[dict[str, Any]],
                runnable.astream_events(value, config, version="v2", **filters))


_CHECKED: list[bool] = []
_CHECK_LOCK = threading.Lock()


def in_task() -> bool:
    """Whether this module runs ``astream_events`` in the caller's task (checked once)."""
    if not _CHECKED:
        with _CHECK_LOCK:
            if not _CHECKED:
                from ._events_probe import probe_matches  # the probe builds chains

                _CHECKED.append(lcel.EVENTS_HANDLER and probe_matches(_events))
    return _CHECKED[0]


async def _events(runnable: Runnable[Any, Any], value: Any, config: RunnableConfig | None,
                  filters: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """``_astream_events_implementation_v2``'s events, the chain run here (see above)."""
    kept: deque[dict[str, Any]] = deque()
    handler = lcel.events_handler(kept.append, **filters)
    config = ensure_config(config)
    run_id = config.get("run_id")
    if run_id is None:
        config["run_id"] = run_id = uuid.uuid4()
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
    root = _Root(value)
    stream = cast(AsyncIterator[Any], runnable.astream(value, config))
    chunks = handler.tap_output_aiter(run_id, stream)
    context = contextvars.copy_context()
    waiting: tuple[_Step, Any] | None = None  # the chain's step, stopped where it waits
    async with aclosing(stream), aclosing(chunks):  # type: ignore[type-var]
        try:
            ended = False
            while not ended:
                step = _Step(chunks.__anext__().__await__(), context)
                try:
                    waits_on = step.send(None)
                except StopIteration:  # a chunk, ready at once
                    pass
                except StopAsyncIteration:
                    ended = True
                except BaseException:
                    while kept:  # what came before the error, then the error
                        yield root.shown(kept.popleft())
                    raise
                else:
                    while True:  # the step waits: what is kept goes out first
                        waiting = step, waits_on
                        while kept:
                            yield root.shown(kept.popleft())
                        waiting = None
                        try:
                            paused = await _Resumed(step, waits_on, kept)
                        except StopAsyncIteration:
                            ended = True
                            break
                        except asyncio.CancelledError:
                            raise  # langchain-core drops what is not read yet, too
                        except BaseException:
                            while kept:
                                yield root.shown(kept.popleft())
                            raise
                        if paused is None:  # a chunk
                            break
                        waits_on = paused[0]  # waits again, with events kept since
                while kept:
                    yield root.shown(kept.popleft())
        except GeneratorExit:  # closed early: the chain cancelled where it waits
            await _cancelled(waiting, chunks, context)
            raise


async def _cancelled(waiting: tuple[_Step, Any] | None, chunks: AsyncIterator[Any],
                     context: contextvars.Context) -> None:
    """Cancel the chain where it waits, as langchain-core cancels the chain's task (it
    ends in ``CancelledError`` there): ``waiting``'s step, or else the chain's next step,
    run up to where it first waits (chunks ready before that go nowhere)."""
    while waiting is None:
        step = _Step(chunks.__anext__().__await__(), context)
        try:
            waiting = step, step.send(None)
        except StopIteration:
            continue
        except BaseException:  # noqa: BLE001 - it ended: nothing left to cancel
            return
    await waiting[0].cancelled(waiting[1])


class _Root:
    """What ``astream_events`` changes in the root run's events: the first event carries
    the input as given, the root's end event none."""

    __slots__ = ("first_run_id", "value")

    def __init__(self, value: Any) -> None:
        self.value, self.first_run_id = value, None

    def shown(self, event: dict[str, Any]) -> dict[str, Any]:
        if self.first_run_id is None:
            event["data"]["input"] = self.value
            self.first_run_id = event["run_id"]
        elif event["run_id"] == self.first_run_id and event["event"].endswith("_end") \
                and "input" in event["data"]:
            del event["data"]["input"]
        return event


class _Step:
    """One ``__anext__`` of the chain, run by hand in ``context``."""

    __slots__ = ("context", "coroutine")

    def __init__(self, coroutine: Generator[Any, Any, Any],
                 context: contextvars.Context) -> None:
        self.coroutine, self.context = coroutine, context

    def send(self, value: Any) -> Any:
        return self.context.run(self.coroutine.send, value)

    def throw(self, error: BaseException) -> Any:
        return self.context.run(self.coroutine.throw, error)

    async def cancelled(self, waits_on: Any) -> None:
        """Cancel the step where it waits on ``waits_on`` and let it clean up."""
        try:
            waits_on = self.throw(asyncio.CancelledError())
        except BaseException:  # noqa: BLE001 - ended: cancelled or failed on its way out
            return
        kept: deque[Any] = deque()  # the events of a cancelled chain go nowhere
        try:
            await _Resumed(self, waits_on, kept)
        except BaseException:  # noqa: BLE001, S110 - the same
            pass


class _Resumed:
    """``await`` of ``step`` resumed where it waits on ``waits_on``: the task waits on
    that, and what is thrown into the task (a cancellation) goes into the step. It
    returns None when the step has its chunk, or ``(what it waits on next,)`` when it
    is about to wait again with events in ``kept``, so that they go out first."""

    __slots__ = ("kept", "step", "waits_on")

    def __init__(self, step: _Step, waits_on: Any, kept: deque[Any]) -> None:
        self.step, self.waits_on, self.kept = step, waits_on, kept

    def __await__(self) -> Generator[Any, Any, tuple[Any] | None]:
        step, waits_on, kept = self.step, self.waits_on, self.kept
        while True:
            try:
                received = yield waits_on
            except GeneratorExit:
                step.coroutine.close()
                raise
            except BaseException as thrown:  # noqa: BLE001 - passed on to the step
                try:
                    waits_on = step.throw(thrown)
                except StopIteration:
                    return None
            else:
                try:
                    waits_on = step.send(received)
                except StopIteration:
                    return None
            if kept:
                return (waits_on,)
