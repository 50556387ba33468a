"""``PassThroughBinding`` (the chains' typed wrapper, and the chain LangServe serves)
streams what LangChain's own ``RunnableBinding`` streams: the same chunks and the same
``astream_events`` (names, tags, metadata, run tree, data), called on its own or from
inside another run."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.runnables import RunnableBinding, RunnableConfig, RunnableLambda

from chains import build_story_chain
from chains.bindings import PassThroughBinding
from maritaca.testing import MaritacaEmulator
from tests.conftest import emulator_model
from tests.test_direct_stream import normalised


def _langchains(chain: PassThroughBinding) -> RunnableBinding:  # type: ignore[type-arg]
    """``chain`` as LangChain's own binding."""
    return RunnableBinding(bound=chain.bound, custom_input_type=chain.custom_input_type,
                           custom_output_type=chain.custom_output_type)


async def _streamed(config: RunnableConfig, langchains: bool,
                    **filters: Any) -> tuple[str, str]:
    """The story chain's chunks and its events (run ids numbered in order), normalised."""
    with MaritacaEmulator(reply_tokens=5) as emulator:
        chain = build_story_chain(emulator_model(emulator))
        assert isinstance(chain, PassThroughBinding)
        runnable = _langchains(chain) if langchains else chain
        chunks = [chunk async for chunk in runnable.astream({"topic": "Brasil"}, config)]
        events = [{**event, "parent_ids": len(event["parent_ids"])} async for event in
                  runnable.astream_events({"topic": "Brasil"}, config, version="v2",
                                          **filters)]
    ids: dict[str, int] = {}
    for event in events:
        event["run_id"] = ids.setdefault(event["run_id"], len(ids))
    return normalised(chunks), normalised(events)


@pytest.mark.parametrize("tags", [["t"], ["z", "a", "z"]], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("filters", [{}, {"include_types": ["chat_model"]}],
                         ids=["all", "filtered"])
async def test_streams_what_langchains_binding_streams(tags: list[str],
                                                      filters: dict[str, Any]) -> None:
    """As the LangServe routes call it (a run name, no run around it), and with tags
    LangChain's merge sorts and makes unique."""
    config: RunnableConfig = {"tags": tags, "run_name": "/story"}
    ours = await _streamed(config, False, **filters)
    assert ours == await _streamed(config, True, **filters)
    chunks, events = ours
    assert chunks.count("'") >= 2 * 5  # a string per token of the 5-token answer
    assert "on_chat_model_stream" in events
    assert ("'/story'" in events) == (not filters)  # the root run keeps its run name
    assert "'a', 'z'" in events or tags == ["t"]  # LangChain's tags: sorted, each once


class _Handler(AsyncCallbackHandler):
    """A handler of the caller's own, passed in the inner call's config."""


async def _seen_by_the_run_around(binding: Any, face: str) -> list[str]:
    """The event names an outer run's ``astream_events`` sees when its step calls
    ``binding`` with a handler of its own in the config."""
    async def step(value: int) -> Any:
        config: RunnableConfig = {"callbacks": [_Handler()], "tags": ["dentro"]}
        if face == "astream":
            return [chunk async for chunk in binding.astream(value, config)]
        return [event["name"] async for event in
                binding.astream_events(value, config, version="v2")]

    outer = RunnableLambda(step, name="fora")
    return [f"{event['event']}:{event['name']}:{','.join(event['tags'])}" async for event
            in outer.astream_events(1, {"tags": ["fora"]}, version="v2")]


@pytest.mark.parametrize("face", ["astream", "astream_events"])
async def test_called_inside_another_run_it_is_that_runs_child(face: str) -> None:
    """LangChain's merge folds the run in progress into the call's config: its
    callbacks make this run a child of it, seen by its events and traces."""
    inner = RunnableLambda(lambda value: value + 1, name="dentro")
    ours = await _seen_by_the_run_around(PassThroughBinding(bound=inner), face)
    assert ours == await _seen_by_the_run_around(RunnableBinding(bound=inner), face)
    assert "on_chain_start:dentro:dentro,fora" in ours
