"""A run's end, reported to its callback handlers in place when none of them can wait.

langchain-core's async run managers report a run's end (``on_chain_end``, ``on_llm_end``
and their ``_error`` twins) through its ``shielded`` decorator: each call becomes a task
of its own, awaited through ``asyncio.shield``, so that the handlers hear of the end even
if the caller is cancelled meanwhile. That costs every call a task, a shield and a trip
through the event loop; a chain run has four such ends, and on ``/stream_events`` each
trip also let the response send what it had so far, one more write per end
(BENCHMARKS.md, issue 26, fifteenth pass).

Use ``await report_end(run.on_chain_end, outputs, ...)`` in place of ``await
run.on_chain_end(outputs, ...)``. When no handler of the run can wait in that callback,
it runs the method's own body (what ``shielded`` wraps, ``__wrapped__``) in the caller's
task: code that never waits cannot be cancelled halfway, so the handlers hear exactly
what the shielded call would have told them. A handler cannot wait when langchain-core
calls it in place (``run_inline``) and it ignores the event, or its callback is a plain
function, or it says so (``ends_in_place``: our ledger when it charges no quota, the
``astream_events`` handler of our direct runs). Any other handler (one langchain-core
gives a task or a worker thread, or an async callback that may do I/O) gets
langchain-core's own shielded call, unchanged.

Two differences remain: the handlers' callbacks run in the caller's context, not a copy
of it; and after a run's successful end, a cancellation pending on the caller (its
cancel scope cancelled) lands at its next wait instead of at the end itself, the end
reported either way.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from anyio.lowlevel import checkpoint_if_cancelled

__all__ = ["report_end"]

# the end callbacks this reports, and the handler flag that makes langchain-core skip each
_IGNORED_BY = {"on_chain_end": "ignore_chain", "on_chain_error": "ignore_chain",
               "on_llm_end": "ignore_llm", "on_llm_error": "ignore_llm"}


async def report_end(end: Callable[..., Awaitable[None]], *args: Any, **kwargs: Any) -> None:
    """``await end(*args, **kwargs)`` (a run manager's shielded end method), in place when
    no handler of the run can wait in it (see the module docstring)."""
    body = getattr(end, "__wrapped__", None)
    manager = getattr(end, "__self__", None)
    event = getattr(end, "__name__", "")
    ignored_by = _IGNORED_BY.get(event)
    if body is None or manager is None or ignored_by is None \
            or not _all_in_place(manager.handlers, event, ignored_by):
        await end(*args, **kwargs)
        return
    await body(manager, *args, **kwargs)
    if event[-6:] == "_error":
        # As the shielded call's wait would: a cancel scope cancelled meanwhile takes
        # over here (a cancellation, not the error the caller is about to raise). Only
        # on an error: the look costs a short request 0.9% at four ends.
        await checkpoint_if_cancelled()


def _all_in_place(handlers: list[Any], event: str, ignored_by: str) -> bool:
    try:
        return all(_in_place(handler, event, ignored_by) for handler in handlers)
    except Exception:  # noqa: BLE001 - a handler's flag failed: langchain-core's own call
        return False


def _in_place(handler: Any, event: str, ignored_by: str) -> bool:
    """Whether langchain-core calls ``handler``'s ``event`` in place and it cannot wait."""
    if not handler.run_inline:
        return False  # langchain-core gathers it in a task (or a worker thread)
    if getattr(handler, ignored_by, False):
        return True
    if not inspect.iscoroutinefunction(getattr(handler, event)):
        return True  # a plain function, called in place
    return getattr(handler, "ends_in_place", False) is True
