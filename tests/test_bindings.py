"""``PassThroughBinding`` (the chains' typed wrapper, and the chain LangServe serves)
streams what LangChain's own ``RunnableBinding`` streams: the same chunks and the same
``astream_events`` (names, tags, metadata, run tree, data), with and without a config of
its own."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.runnables import RunnableBinding

from chains import build_story_chain
from chains.bindings import PassThroughBinding
from maritaca.testing import MaritacaEmulator
from tests.conftest import emulator_model
from tests.test_direct_stream import normalised


def _langchains(chain: PassThroughBinding) -> RunnableBinding:  # type: ignore[type-arg]
    """``chain`` as LangChain's own binding."""
    return RunnableBinding(bound=chain.bound, config=chain.config, kwargs=chain.kwargs,
                           config_factories=chain.config_factories,
                           custom_input_type=chain.custom_input_type,
                           custom_output_type=chain.custom_output_type)


async def _streamed(own_config: bool, langchains: bool, **filters: Any) -> tuple[str, str]:
    """The story chain's chunks and its events (run ids numbered in order), normalised."""
    with MaritacaEmulator(reply_tokens=5) as emulator:
        chain = build_story_chain(emulator_model(emulator))
        assert isinstance(chain, PassThroughBinding)
        if own_config:
            chain = chain.with_config(tags=["da-ligacao"], metadata={"origem": "teste"})
        runnable = _langchains(chain) if langchains else chain
        config = {"tags": ["t"], "run_name": "/story"}
        chunks = [chunk async for chunk in runnable.astream({"topic": "Brasil"}, config)]
        events = [{**event, "parent_ids": len(event["parent_ids"])} async for event in
                  runnable.astream_events({"topic": "Brasil"}, config, version="v2",
                                          **filters)]
    ids: dict[str, int] = {}
    for event in events:
        event["run_id"] = ids.setdefault(event["run_id"], len(ids))
    return normalised(chunks), normalised(events)


@pytest.mark.parametrize("own_config", [False, True], ids=["bare", "own-config"])
@pytest.mark.parametrize("filters", [{}, {"include_types": ["chat_model"]}],
                         ids=["all", "filtered"])
async def test_streams_what_langchains_binding_streams(own_config: bool,
                                                      filters: dict[str, Any]) -> None:
    ours = await _streamed(own_config, False, **filters)
    assert ours == await _streamed(own_config, True, **filters)
    chunks, events = ours
    assert "Era" in chunks or len(chunks) > 20
    assert "on_chat_model_stream" in events
    assert ("da-ligacao" in events) == own_config
    assert ("'/story'" in events) == (not filters)  # the root run keeps its run_name

