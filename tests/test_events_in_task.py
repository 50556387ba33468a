"""``chains.events_in_task``: ``astream_events`` (v2) run in the caller's task gives
exactly langchain-core's events, on the real chains against the emulator: the same
events in the same order, the start events before the first token arrives, the events
before an error and then the error, and a stream closed early that cancels the chain
where it waits and closes the upstream, as langchain-core's own does."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chains import build_chains, events_in_task
from maritaca.run_probe import Recorder, plain
from maritaca.testing import MaritacaEmulator, Scenario
from tests.conftest import emulator_model, wait_disconnected

STORY = {"topic": "Brasil"}
# what differs between two emulators: the completion ids, new for every answer, and the port
PER_EMULATOR = re.compile(r"chatcmpl-[0-9a-f]+|127\.0\.0\.1:[0-9]+")


def _ours(chain: Any, value: Any, config: Any = None, **filters: Any) -> AsyncIterator[Any]:
    return events_in_task._events(chain, value, config, filters)


def _langchains(chain: Any, value: Any, config: Any = None,
                **filters: Any) -> AsyncIterator[Any]:
    return chain.astream_events(value, config, version="v2", **filters)


async def _seen(events: AsyncIterator[Any]) -> list[Any]:
    """Every event, then the error the stream ended with (its repr), if any."""
    seen: list[Any] = []
    try:
        async for event in events:
            seen.append(event)
    except Exception as error:  # noqa: BLE001 - the error is part of what is compared
        seen.append(repr(error))
    return _without_completion_ids(plain(seen))


def _without_completion_ids(value: Any) -> Any:
    if isinstance(value, str):
        return PER_EMULATOR.sub("", value)
    if isinstance(value, dict):
        return {key: _without_completion_ids(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_completion_ids(item) for item in value]
    return value


async def _both(name: str, value: Any, scenario: Any = None, **filters: Any
                ) -> tuple[list[Any], list[Any]]:
    seen = []
    for events in (_ours, _langchains):
        with MaritacaEmulator(reply_tokens=5) as emulator:
            if scenario is not None:
                emulator.enqueue(scenario)
            chain = build_chains(emulator_model(emulator, max_retries=0))[name]
            recorder = Recorder()
            seen.append(await _seen(events(chain, value, {"callbacks": [recorder],
                                                          "tags": ["t"]}, **filters)))
    return seen[0], seen[1]


def test_the_installed_langchain_core_gives_the_same_events() -> None:
    assert events_in_task.in_task()


@pytest.mark.parametrize(("name", "value", "filters"), [
    ("story", STORY, {}),
    ("qa", {"question": "Qual é a capital do Brasil?"}, {}),
    ("story", STORY, {"include_types": ["chat_model"]}),
    ("story", STORY, {"exclude_tags": ["seq:step:3"], "exclude_names": ["story"]}),
])
async def test_the_chains_events_are_langchain_cores(name: str, value: Any,
                                                     filters: dict[str, Any]) -> None:
    ours, theirs = await _both(name, value, **filters)
    assert ours == theirs
    kinds = [event["event"] for event in ours]
    assert kinds.count("on_chat_model_stream") >= 5
    if not filters:
        assert kinds[0] == "on_chain_start" and ours[0]["data"] == {"input": value}
        assert kinds[-1] == "on_chain_end" and "input" not in ours[-1]["data"]


@pytest.mark.parametrize("scenario", [Scenario.server_error(), Scenario.error_event(2),
                                      Scenario.drop(2)], ids=["500", "error event", "drop"])
async def test_an_upstream_failure_comes_after_the_events_before_it(scenario: Any) -> None:
    ours, theirs = await _both("story", STORY, scenario)
    assert ours == theirs
    assert isinstance(ours[-1], str) and "Error" in ours[-1]  # the error, last
    assert ours[0]["event"] == "on_chain_start"


async def test_the_start_events_go_out_before_the_first_token() -> None:
    """Nothing is held back while the chain waits for the upstream."""
    with MaritacaEmulator(reply_tokens=5) as emulator:
        emulator.enqueue(Scenario.slow_first_token(1.0))
        chain = build_chains(emulator_model(emulator))["story"]
        events = _ours(chain, STORY)
        kinds = []
        async for event in events:
            kinds.append(event["event"])
            if event["event"] == "on_chat_model_start":
                break
        # no token has left the upstream yet
        assert all(request.chunks_sent == 0 for request in emulator.requests)
        await events.aclose()  # type: ignore[attr-defined]
    assert kinds == ["on_chain_start", "on_chain_start", "on_prompt_start", "on_prompt_end",
                     "on_chat_model_start"]


@pytest.mark.parametrize("after", ["on_chat_model_start", "on_chat_model_stream",
                                   "on_chain_stream"])
async def test_closing_early_cancels_the_chain_as_langchain_core_does(after: str) -> None:
    """Closed after any event, the chain's runs end as langchain-core's task's do (in a
    cancellation, where the chain waits), and the upstream request is closed."""
    ends = []
    for events in (_ours, _langchains):
        with MaritacaEmulator(reply_tokens=400) as emulator:
            emulator.enqueue(Scenario.token_delay(0.01))
            chain = build_chains(emulator_model(emulator))["story"]
            recorder = Recorder()
            stream = events(chain, STORY, {"callbacks": [recorder]})
            async for event in stream:
                if event["event"] == after:
                    break
            left = time.monotonic()
            await stream.aclose()  # type: ignore[attr-defined]
            await asyncio.sleep(0.2)  # a request on its way has reached the emulator
            for request in emulator.requests:  # none, if closed before it was sent
                await asyncio.to_thread(wait_disconnected, request, left)
                assert request.chunks_sent < 400
        ends.append([(e[0], repr(e[1][0])) for e in recorder.events if "error" in e[0]])
    assert ends[0] == ends[1]
    assert ends[0] and all(error == "CancelledError()" for _, error in ends[0])


async def test_without_the_check_it_is_langchain_cores_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_in_task, "_CHECKED", [False])
    with MaritacaEmulator(reply_tokens=5) as emulator:
        chain = build_chains(emulator_model(emulator))["story"]
        events = events_in_task.astream_events(chain, STORY)
        assert events.ag_code.co_qualname.startswith("Runnable.")  # type: ignore[attr-defined]
        assert [e async for e in events]


def test_the_check_catches_events_that_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    from chains._events_probe import probe_matches

    assert probe_matches(events_in_task._events)
    monkeypatch.setattr(events_in_task._Root, "shown", lambda self, event: event)
    assert not probe_matches(events_in_task._events)  # the root's input as given, missing
