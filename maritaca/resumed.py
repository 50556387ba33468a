"""Awaiting a coroutine (or an ``__anext__``) that was run by hand up to its first wait.

Use ``Resumed(step, waits_on)`` when code has called ``step.send(None)`` itself, in the
task that awaits it, to learn whether the step finishes without waiting
(``StopIteration``), and it did not: it got back ``waits_on``, what the step waits on.
``await Resumed(step, waits_on)`` goes on as ``await step`` would have from there: the
awaiting task waits on ``waits_on``, what it is sent or has thrown into it (a
cancellation included) goes into ``step``, and the step's result is returned. Await it
in that same task: anyio's cancel scopes and ``asyncio.timeout`` belong to the task that
entered them.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

__all__ = ["Resumed"]


class Resumed:
    """``await`` of ``step``, resumed where it waits on ``waits_on`` (see above)."""

    __slots__ = ("step", "waits_on")

    def __init__(self, step: Any, waits_on: Any) -> None:
        self.step, self.waits_on = step, waits_on

    def __await__(self) -> Generator[Any, Any, Any]:
        return _resumed(self.step, self.waits_on)


def _resumed(step: Any, waits_on: Any) -> Generator[Any, Any, Any]:
    while True:
        try:
            received = yield waits_on
        except GeneratorExit:
            step.close()
            raise
        except BaseException as thrown:  # noqa: BLE001 - passed on to the step
            try:
                waits_on = step.throw(thrown)
            except StopIteration as done:
                return done.value
        else:
            try:
                waits_on = step.send(received)
            except StopIteration as done:
                return done.value
