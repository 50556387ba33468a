"""``maritaca.run_end.report_end``: a run's end reaches every handler as langchain-core's
shielded call delivers it: in place when no handler can wait, langchain-core's own
shielded call otherwise (a handler that waits keeps its task, its locks and its shield
from the caller's cancellation)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from langchain_core.callbacks import (
    AsyncCallbackHandler,
    AsyncCallbackManager,
    BaseCallbackHandler,
)

from maritaca.run_end import report_end


class Heard(AsyncCallbackHandler):
    """Keeps each chain end; waits ``pause`` seconds first if given."""

    def __init__(self, *, pause: float = 0.0, inline: bool = True, fail: bool = False,
                 in_place: bool = False) -> None:
        self.pause, self.run_inline, self.raise_error = pause, inline, fail
        self.ends_in_place = in_place
        self.ends: list[Any] = []

    async def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        if self.pause:
            await asyncio.sleep(self.pause)
        if self.raise_error:
            raise RuntimeError("o handler falhou")
        self.ends.append((outputs, kwargs.get("inputs")))


class PlainHeard(BaseCallbackHandler):
    """A synchronous handler langchain-core calls in place."""

    run_inline = True

    def __init__(self) -> None:
        self.ends: list[Any] = []

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        self.ends.append(outputs)


async def _run(*handlers: Any) -> Any:
    manager = AsyncCallbackManager(handlers=list(handlers))
    return await manager.on_chain_start({}, {"topic": "Brasil"})


def _first_step(awaitable: Any) -> bool:
    """Whether ``awaitable`` finished at its first step (it never waited)."""
    step = awaitable.__await__()
    try:
        step.send(None)
    except StopIteration:
        return True
    step.close()
    return False


async def test_an_end_no_handler_can_wait_on_is_reported_in_place() -> None:
    declared, plain = Heard(in_place=True), PlainHeard()
    run = await _run(declared, plain)
    assert _first_step(report_end(run.on_chain_end, "fim", inputs={"topic": "Brasil"}))
    assert declared.ends == [("fim", {"topic": "Brasil"})] and plain.ends == ["fim"]


@pytest.mark.parametrize("handler", [Heard(), Heard(inline=False, in_place=True)],
                         ids=["async-undeclared", "not-inline"])
async def test_a_handler_that_may_wait_gets_langchain_cores_shielded_call(handler: Heard
                                                                          ) -> None:
    run = await _run(Heard(in_place=True), handler)
    assert not _first_step(report_end(run.on_chain_end, "fim"))
    await asyncio.sleep(0.01)  # the shielded task, started above, has ended
    assert handler.ends == [("fim", None)]


async def test_a_waiting_handler_hears_the_end_even_if_the_caller_is_cancelled() -> None:
    inline, slow = Heard(in_place=True), Heard(pause=0.05, inline=False)
    run = await _run(inline, slow)
    ending = asyncio.ensure_future(report_end(run.on_chain_end, "fim"))
    await asyncio.sleep(0.01)
    ending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ending
    await asyncio.sleep(0.1)
    assert inline.ends == [("fim", None)] and slow.ends == [("fim", None)]


async def test_a_handler_that_waits_under_an_anyio_lock_ends_cleanly() -> None:
    """An inline handler that does I/O (an httpx call takes anyio locks) runs in one
    task from start to end, as langchain-core runs it."""
    lock = anyio.Lock()

    class Webhook(AsyncCallbackHandler):
        run_inline, raise_error = True, True

        async def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
            async with lock:
                await asyncio.sleep(0)

    run = await _run(Webhook())
    await report_end(run.on_chain_end, "fim")
    assert not lock.locked()


@pytest.mark.parametrize("in_place", [True, False])
async def test_a_handler_that_raises_its_errors_fails_the_call(in_place: bool) -> None:
    run = await _run(Heard(fail=True, in_place=in_place))
    with pytest.raises(RuntimeError, match="o handler falhou"):
        await report_end(run.on_chain_end, "fim")


async def test_a_method_that_is_not_shielded_is_awaited_as_it_is() -> None:
    calls: list[str] = []

    async def end(outputs: str) -> None:
        calls.append(outputs)

    await report_end(end, "fim")
    assert calls == ["fim"]


async def test_a_handler_whose_flag_fails_gets_langchain_cores_call() -> None:
    """langchain-core logs a handler's failing ``ignore_chain`` and tells the others."""
    class Broken(BaseCallbackHandler):
        run_inline = True

        @property
        def ignore_chain(self) -> bool:
            raise RuntimeError("a flag que falha")

    plain = PlainHeard()
    run = await _run(Broken(), plain)
    await report_end(run.on_chain_end, "fim")
    assert plain.ends == ["fim"]


async def test_an_error_raised_in_a_cancelled_scope_ends_as_the_cancellation() -> None:
    """In a cancel scope already cancelled (a hang-up, in the server's responses), an
    error reported in place then raised ends the scope as the shielded call's wait
    would: as the scope's cancellation, which the scope takes."""
    heard = Heard(in_place=True)
    run = await _run(heard)
    left = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            raise ValueError("o upstream respondeu 500")
        except ValueError as error:
            await report_end(run.on_chain_error, error)
            raise
    left = True
    assert left and scope.cancelled_caught
