"""The check, run once, that ``chains.events_in_task`` gives exactly the events
langchain-core's ``astream_events`` (v2) gives.

It streams probe chains on a fake chat model both ways: a direct chain and the same
``prompt | model | parser`` as plain LCEL, with and without event filters, with a
``run_id`` given, with callbacks of the caller's, and on input that fails; and compares
every event (names, types, tags, metadata, data, parent ids; run ids by order of
appearance) and the error, if any.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from maritaca.run_probe import Recorder, areports_match, plain

from ._direct import DirectChain
from ._parsers import InlineStrOutputParser

__all__ = ["probe_matches"]

_VALID, _INVALID = {"topic": "Brasil"}, {"topic": ""}
_RUN_ID = "4b46c61c-0d6a-4c1e-9a43-5b1f2a6e7d10"
_FILTERS: tuple[dict[str, Any], ...] = (
    {}, {"include_types": ["chat_model"]},
    {"exclude_names": ["ChatPromptTemplate"], "exclude_tags": ["seq:step:3"]})
Events = Callable[[Runnable[Any, Any], Any, RunnableConfig, dict[str, Any]],
                  AsyncIterator[Any]]


def _prepare(value: Any, config: RunnableConfig) -> tuple[dict[str, str], RunnableConfig]:
    if not value["topic"]:
        raise ValueError("topic is empty")
    return value, config


def _chains() -> list[Runnable[Any, Any]]:
    """A direct chain and a plain LCEL one, each on a fresh fake model."""
    def inner() -> Runnable[Any, Any]:
        model = GenericFakeChatModel(messages=iter([AIMessage("Era uma vez no Brasil")]))
        return ChatPromptTemplate.from_messages([("human", "{topic}")]) | model \
            | InlineStrOutputParser()

    return [DirectChain(name="probe", inner=inner(), prepare=_prepare),
            RunnableLambda(lambda value: _prepare(value, {})[0], name="prepare") | inner()]


def _runs(stream: Callable[..., list[Any]]) -> list[Any]:
    seen = []
    for filters in _FILTERS:
        for value, run_id in ((_VALID, None), (_VALID, _RUN_ID), (_INVALID, None)):
            for chain in _chains():
                config: RunnableConfig = {"callbacks": [Recorder()], "tags": ["probe"],
                                          "metadata": {"probe": 1}}
                if run_id:
                    config["run_id"] = run_id  # type: ignore[typeddict-item]
                seen.append(plain(stream(chain, value, config, filters)))
    return seen


def _caught(events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``events``, then the error they end with as one more item."""
    async def caught() -> AsyncIterator[Any]:
        try:
            async for event in events:
                yield event
        except ValueError as error:
            yield error

    return caught()


def probe_matches(events: Events) -> bool:
    """Whether ``events(runnable, value, config, filters)`` gives what
    ``runnable.astream_events(value, config, version="v2", **filters)`` gives."""
    return areports_match(
        _runs,
        lambda chain, value, config, filters: _caught(events(chain, value, config, filters)),
        lambda chain, value, config, filters: _caught(
            chain.astream_events(value, config, version="v2", **filters)))
