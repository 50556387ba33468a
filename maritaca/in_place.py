"""Running a coroutine in place, in the caller's task, up to its first wait.

Use ``run_until_wait(coro)`` where a coroutine would be given a task of its own only so
that it runs to its end whatever happens to the caller (``asyncio.shield`` of a task):
langchain-core's end callbacks, the close of an upstream response. Until it first waits,
a coroutine cannot be interrupted, so running that part in place changes nothing but the
cost; only if it does wait is the rest given the task (and the shield).

``Resumed(step, waits_on)``: for code that has called ``step.send(None)`` itself (a
coroutine, or an async generator's ``__anext__``) and got back ``waits_on``, what it
waits on. ``await Resumed(step, waits_on)`` goes on as ``await step`` would have from
there: the awaiting task waits on ``waits_on``, what it is sent or has thrown into it (a
cancellation included) goes into ``step``, and the step's result is returned.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["Resumed", "run_until_wait"]

T = TypeVar("T")


def run_until_wait(coro: Coroutine[Any, Any, T]) -> tuple[bool, Any]:
    """Run ``coro`` in place until it ends or first waits: ``(True, its result)``, or
    ``(False, rest)`` where ``rest`` is a coroutine that goes on from the wait (give it a
    task). What ``coro`` raises before it waits is raised here."""
    try:
        waits_on = coro.send(None)
    except StopIteration as done:
        return True, done.value
    return False, _rest(coro, waits_on)


async def _rest(step: Any, waits_on: Any) -> Any:
    return await Resumed(step, waits_on)


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
