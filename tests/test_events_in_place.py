"""``chains.events.astream_events`` reports what langchain-core's ``astream_events``
(v2) reports, event for event, for the chains on the emulator's wire, and stops the run
when its reader stops."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from typing import Any

import pytest
from langchain_core.callbacks import adispatch_custom_event
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda

from chains import build_chains, events
from chains._direct import DirectChain
from chains._direct_probe import probe_prompt
from chains._parsers import InlineStrOutputParser
from maritaca.run_probe import plain
from maritaca.testing import MaritacaEmulator, Scenario
from tests.conftest import emulator_model, wait_disconnected

COMPLETION_ID = re.compile(r"chatcmpl-[0-9a-f]+")
RUN_ID = "5f0c2a52-0d3c-4a4e-9f57-0a1b2c3d4e5f"


def _config() -> dict[str, Any]:
    return {"run_id": RUN_ID, "tags": ["teste"], "metadata": {"origem": "teste"}}


async def _both(chain: Any, value: Any, other: Any = None,
                **filters: Any) -> tuple[list[Any], list[Any]]:
    """(ours with ``chain``, langchain-core's with ``other`` or ``chain``) as plain data,
    a failure as the last item."""
    seen = []
    other = chain if other is None else other
    for stream in (events.astream_events(chain, value, _config(), **filters),
                   other.astream_events(value, _config(), version="v2", **filters)):
        got: list[Any] = []
        try:
            async for event in stream:
                got.append(event)
        except Exception as error:  # noqa: BLE001 - compared as the last item
            got.append(error)
        # as JSON, the emulator's completion ids (one per request) left out
        seen.append(json.loads(COMPLETION_ID.sub("chatcmpl", json.dumps(plain(got)))))
    return seen[0], seen[1]


def test_the_probe_found_the_events_in_place() -> None:
    """On the langchain-core installed, the server reads the events in place (a
    release that changed the handler would make it fall back, silently but correctly:
    this says so)."""
    assert events.in_place()


@pytest.mark.parametrize("filters", [{}, {"include_types": ["chat_model"]},
                                     {"exclude_names": ["ChatPromptTemplate"]},
                                     {"include_tags": ["nenhuma"]}])
async def test_the_story_chains_events_are_langchain_cores(filters: dict[str, Any]) -> None:
    # an emulator each: a second request for the same prompt would find it cached
    with MaritacaEmulator() as emu, MaritacaEmulator() as other:
        ours, theirs = await _both(build_chains(emulator_model(emu))["story"],
                                   {"topic": "Brasil"},
                                   build_chains(emulator_model(other))["story"], **filters)
    assert ours == theirs
    if not filters:
        kinds = [event["event"] for event in ours]
        assert kinds[0] == "on_chain_start" and kinds[-1] == "on_chain_end"
        assert kinds.count("on_chat_model_stream") >= 5


async def test_a_failing_answer_fails_the_same_way() -> None:
    with MaritacaEmulator() as emu, MaritacaEmulator() as other:
        emu.enqueue(Scenario.error_event(after_chunks=3))
        other.enqueue(Scenario.error_event(after_chunks=3))
        ours, theirs = await _both(build_chains(emulator_model(emu))["story"],
                                   {"topic": "Brasil"},
                                   build_chains(emulator_model(other))["story"])
    assert ours == theirs
    kinds = [event["event"] for event in ours[:-1]]
    assert kinds.count("on_chat_model_stream") == 3 and "on_chain_end" not in kinds
    assert ours[-1].startswith("StreamError(") and "mid-stream" in ours[-1]


async def test_events_sent_from_a_worker_thread_arrive_while_it_runs() -> None:
    """A synchronous step runs on a worker thread; the run it starts there reports from
    that thread. Its events reach the reader while the thread still runs (the step
    waits for the reader to have seen its inner run end), in their place."""
    threads: list[int] = []
    waited: list[bool] = []
    seen = threading.Event()
    inner = RunnableLambda(lambda text: text.upper(), name="maiusculas")

    def step(value: dict[str, str]) -> str:
        threads.append(threading.get_ident())
        text = inner.invoke(value["topic"])
        waited.append(seen.wait(5))
        return text

    chain = RunnableLambda(step, name="passo") | RunnableLambda(
        lambda text: f"<{text}>", name="embrulho")
    runs = []
    for stream in (lambda: events.astream_events(chain, {"topic": "Brasil"}, _config()),
                   lambda: chain.astream_events({"topic": "Brasil"}, _config(), version="v2")):
        seen.clear()
        got = []
        async for event in stream():
            got.append(event)
            if (event["event"], event["name"]) == ("on_chain_end", "maiusculas"):
                seen.set()
        runs.append(plain(got))
    assert waited == [True, True]
    assert runs[0] == runs[1]
    assert threads and threading.get_ident() not in threads
    names = [(event["event"], event["name"]) for event in runs[0]]
    assert names.index(("on_chain_end", "maiusculas")) < names.index(
        ("on_chain_start", "embrulho"))


async def test_events_behind_a_worker_threads_keep_their_place() -> None:
    """A direct chain whose ``prepare`` runs a synchronous step: langchain-core sends
    that step's events from a worker thread while the loop waits for it. The events the
    loop sends afterwards must not pass them."""
    lookup = RunnableLambda(lambda value: {"topic": value["topic"].upper()}, name="busca")

    def chain() -> Any:
        model = GenericFakeChatModel(messages=iter([AIMessage("Era uma vez")]))
        return DirectChain(name="cadeia", inner=probe_prompt() | model | InlineStrOutputParser(),
                           prepare=lambda value, config: (lookup.invoke(value, config), config))

    ours = [(e["event"], e["name"]) async for e in
            events.astream_events(chain(), {"topic": "b"}, _config())]
    theirs = [(e["event"], e["name"]) async for e in
              chain().astream_events({"topic": "b"}, _config(), version="v2")]
    assert ours == theirs
    assert ours.index(("on_chain_end", "busca")) < ours.index(("on_chain_start",
                                                                 "RunnableSequence"))


async def test_an_event_sent_after_the_run_ended_is_not_read() -> None:
    """A task the chain leaves behind sends an event once the run is over: langchain-core's
    reader has stopped by then, and so does ours, even for a slow client."""
    async def late(config: Any) -> None:
        await asyncio.sleep(0.01)
        await adispatch_custom_event("tarde", {}, config=config)

    async def step(value: int, config: Any) -> int:
        asyncio.get_running_loop().create_task(late(config))  # left behind
        return value

    async def read(stream: Any) -> list[Any]:
        got = []
        async for event in stream:
            got.append((event["event"], event["name"]))
            await asyncio.sleep(0.02)  # a slow client
        return got

    chain = RunnableLambda(step, name="passo")
    theirs = await read(chain.astream_events(1, _config(), version="v2"))
    await asyncio.sleep(0.05)
    ours = await read(events.astream_events(chain, 1, _config()))
    assert ours == theirs == [("on_chain_start", "passo"), ("on_chain_stream", "passo"),
                              ("on_chain_end", "passo")]


async def test_closing_the_events_stops_the_run_and_its_upstream_request() -> None:
    with MaritacaEmulator(reply_tokens=400, token_delay=0.01) as emu:
        chain = build_chains(emulator_model(emu))["story"]
        stream = events.astream_events(chain, {"topic": "Brasil"}, _config())
        async for event in stream:
            if event["event"] == "on_chat_model_stream":
                break
        await stream.aclose()  # type: ignore[attr-defined]
        closed_at = time.monotonic()
        record = emu.requests[-1]
        await asyncio.to_thread(wait_disconnected, record, closed_at)
        assert record.chunks_sent < 100
    # nothing of the run is left running
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    assert not [task for task in others
                if "_events_in_place" in task.get_coro().__qualname__]  # its run task


def test_the_probe_notices_events_that_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reading that loses the root run's input (as a changed handler could make it)
    is not used: langchain-core's own ``astream_events`` is."""
    reading = events._events_in_place

    async def without_root_input(*args: Any) -> Any:
        async for event in reading(*args):
            event["data"].pop("input", None)
            yield event

    monkeypatch.setattr(events, "_events_in_place", without_root_input)
    events.in_place.cache_clear()
    try:
        assert not events.in_place()
    finally:
        monkeypatch.undo()
        events.in_place.cache_clear()
    assert events.in_place()


def test_a_config_without_the_root_run_id_is_refused() -> None:
    chain = RunnableLambda(lambda value: value, name="eco")
    with pytest.raises(ValueError, match="run_id"):
        events.astream_events(chain, {"topic": "Brasil"}, {"tags": []})
