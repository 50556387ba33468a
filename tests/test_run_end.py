"""``maritaca.run_end.report_end``: a run's end reaches every handler as langchain-core's
shielded call delivers it, in place when no handler waits, and shielded from the
caller's cancellation when one does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, AsyncCallbackManager

from maritaca.run_end import report_end


class Heard(AsyncCallbackHandler):
    """Keeps each chain end; waits ``pause`` seconds first if given (then it is not
    ``run_inline``: langchain-core gives it a task)."""

    def __init__(self, *, pause: float = 0.0, inline: bool = True, fail: bool = False) -> None:
        self.pause, self.run_inline, self.raise_error = pause, inline, fail
        self.ends: list[Any] = []

    async def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        if self.pause:
            await asyncio.sleep(self.pause)
        if self.raise_error:
            raise RuntimeError("o handler falhou")
        self.ends.append((outputs, kwargs.get("inputs")))


async def _run(*handlers: Heard) -> Any:
    manager = AsyncCallbackManager(handlers=list(handlers))
    return await manager.on_chain_start({}, {"topic": "Brasil"})


async def test_an_end_no_handler_waits_on_is_reported_without_a_trip_through_the_loop():
    heard = Heard()
    run = await _run(heard)
    step = report_end(run.on_chain_end, "fim", inputs={"topic": "Brasil"}).__await__()
    with pytest.raises(StopIteration):  # done at the first step: it never waited
        step.send(None)
    assert heard.ends == [("fim", {"topic": "Brasil"})]


async def test_a_waiting_handler_hears_the_end_even_if_the_caller_is_cancelled():
    inline, slow = Heard(), Heard(pause=0.05, inline=False)
    run = await _run(inline, slow)
    ending = asyncio.ensure_future(report_end(run.on_chain_end, "fim"))
    await asyncio.sleep(0.01)
    ending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ending
    assert inline.ends == [("fim", None)]
    await asyncio.sleep(0.1)
    assert slow.ends == [("fim", None)]  # the shielded rest ran on to its end


@pytest.mark.parametrize("pause", [0.0, 0.01])
async def test_a_handler_that_raises_its_errors_fails_the_call(pause: float):
    run = await _run(Heard(pause=pause, fail=True))
    with pytest.raises(RuntimeError, match="o handler falhou"):
        await report_end(run.on_chain_end, "fim")


async def test_a_method_that_is_not_shielded_is_awaited_as_it_is():
    calls: list[str] = []

    async def end(outputs: str) -> None:
        calls.append(outputs)

    await report_end(end, "fim")
    assert calls == ["fim"]
