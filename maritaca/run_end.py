"""A run's end, reported to its callback handlers in place unless one of them must wait.

langchain-core's async run managers report a run's end (``on_chain_end``, ``on_llm_end``
and their ``_error`` twins) through its ``shielded`` decorator: each call becomes a task
of its own, awaited through ``asyncio.shield``, so that the handlers hear of the end even
if the caller is cancelled meanwhile. That costs every call a task, a shield and a trip
through the event loop; a chain run has four such ends, and on ``/stream_events`` each
trip also let the response send what it had so far, one more write per end
(BENCHMARKS.md, issue 26, fifteenth pass).

Use ``await report_end(run.on_chain_end, outputs, ...)`` in place of ``await
run.on_chain_end(outputs, ...)`` (any shielded method of a run manager). It runs the same
method's own body (what ``shielded`` wraps, ``__wrapped__``) in the caller's task, up to
the first point where a handler waits (I/O, a task of langchain-core's for a handler
that is not ``run_inline``, a worker thread for a synchronous one: ``in_place.run_until_wait``).
If none waits, the
end is reported there and then: no cancellation can land in code that never waits, so
the handlers hear exactly what the shielded call would have told them. If one does, the
rest goes on as langchain-core runs it: in a task of its own, shielded.

The one difference: what the handlers run before their first wait runs in the caller's
context, not in a copy of it (a handler that sets a context variable there would set
it for the caller).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .in_place import run_until_wait

__all__ = ["report_end"]


async def report_end(end: Callable[..., Awaitable[None]], *args: Any, **kwargs: Any) -> None:
    """``await end(*args, **kwargs)`` (a run manager's shielded end method), in place when
    its handlers do not wait (see the module docstring)."""
    body = getattr(end, "__wrapped__", None)
    owner = getattr(end, "__self__", None)
    if body is None or owner is None:  # not langchain-core's shielded method
        await end(*args, **kwargs)
        return
    done, rest = run_until_wait(body(owner, *args, **kwargs))
    if not done:
        await asyncio.shield(asyncio.ensure_future(rest))
