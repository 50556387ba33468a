"""The check, run once at import, that a chain's direct stream is LCEL's stream.

``chains._direct`` re-does what LCEL's streaming transforms report, from LCEL internals a
langchain-core release may change without notice (``chains._lcel_private``).
``probe_matches`` builds a probe ``prompt | model | parser`` chain on a fake chat model,
streams it the direct way and LCEL's way, sync and async, on valid and on invalid input,
and compares every chunk and every callback (names, run tree, tags, inputs, outputs).
Tracing to LangSmith is off for these runs; the async ones run on an event loop of their
own, in a short-lived thread.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langsmith import tracing_context
from pydantic import BaseModel

from ._parsers import InlineStrOutputParser

__all__ = ["probe_matches"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_INPUTS = ({"topic": "Brasil"}, {"topic": ""})  # the second one fails in prepare


class _Recorder(BaseCallbackHandler):
    """The callbacks of the runs of a chain, with their arguments."""

    run_inline = True

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_chain_start(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("chain start", args, kwargs))

    def on_chain_end(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("chain end", args, kwargs))

    def on_chain_error(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("chain error", [repr(arg) for arg in args], kwargs))

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("model start", args[1:], kwargs))

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        self.events.append(("model end", args, kwargs))


def _plain(value: Any, seen: dict[str, int]) -> Any:
    """``value`` as plain data, each run id replaced by its order of appearance."""
    if isinstance(value, UUID | str):
        return _UUID.sub(lambda m: f"#{seen.setdefault(m.group(), len(seen))}", str(value))
    if isinstance(value, BaseModel):
        return type(value).__name__, _plain(dict(value), seen)
    if isinstance(value, dict):
        return {key: _plain(item, seen) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, seen) for item in value]
    return repr(value) if isinstance(value, BaseException) else value


def _prepare(value: Any, config: RunnableConfig) -> tuple[dict[str, str], RunnableConfig]:
    if not value["topic"]:
        raise ValueError("topic is empty")
    return value, config


def _probe_chain(direct_chain: type[Any]) -> Any:
    model = GenericFakeChatModel(messages=iter([AIMessage("Era uma vez no Brasil")]))
    inner = (ChatPromptTemplate.from_messages([("human", "{topic}")]) | model
             | InlineStrOutputParser())
    return direct_chain(name="probe", inner=inner, prepare=_prepare)


def _config() -> tuple[RunnableConfig, _Recorder]:
    recorder = _Recorder()
    return {"callbacks": [recorder], "tags": ["probe"], "metadata": {"probe": 1}}, recorder


# _sync_runs and _async_runs are deliberate sync/async twins.
def _sync_runs(direct_chain: type[Any], stream: Callable[..., Iterator[Any]]) -> list[Any]:
    runs = []
    for value in _INPUTS:
        config, recorder = _config()
        chunks: list[Any] = []
        try:
            with tracing_context(enabled=False):
                chunks.extend(stream(_probe_chain(direct_chain), value, config))
        except ValueError as error:
            chunks.append(error)
        runs.append(_plain((chunks, recorder.events), {}))
    return runs


async def _async_runs(direct_chain: type[Any],
                      astream: Callable[..., AsyncIterator[Any]]) -> list[Any]:
    runs = []
    for value in _INPUTS:
        config, recorder = _config()
        chunks: list[Any] = []
        try:
            with tracing_context(enabled=False):
                chunks.extend([c async for c in astream(_probe_chain(direct_chain), value,
                                                        config)])
        except ValueError as error:
            chunks.append(error)
        runs.append(_plain((chunks, recorder.events), {}))
    return runs


def _own_loop(run: Callable[[], Any]) -> Any:
    """``asyncio.run(run())`` in a thread (the importer may be inside a running loop);
    None if it fails."""
    result: list[Any] = [None]

    def target() -> None:
        try:
            result[0] = asyncio.run(run())
        except Exception:  # noqa: BLE001 - a failed probe means: LCEL's path
            result[0] = None

    thread = threading.Thread(target=target, name="chains-probe")
    thread.start()
    thread.join()
    return result[0]


def probe_matches(direct_chain: type[Any]) -> bool:
    """Whether ``direct_chain``'s ``_direct_stream``/``_direct_astream`` report exactly
    what LCEL's ``RunnableLambda.stream``/``astream`` of the same chain report."""
    try:
        direct = _sync_runs(direct_chain, lambda c, v, k: c._direct_stream(v, k))
        if direct != _sync_runs(direct_chain, lambda c, v, k: RunnableLambda.stream(c, v, k)):
            return False
        adirect = _own_loop(lambda: _async_runs(
            direct_chain, lambda c, v, k: c._direct_astream(v, k)))
        return adirect is not None and adirect == _own_loop(lambda: _async_runs(
            direct_chain, lambda c, v, k: RunnableLambda.astream(c, v, k)))
    except Exception:  # noqa: BLE001 - a failed probe means: LCEL's path
        return False
