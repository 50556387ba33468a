"""LangServe's ``/stream`` attaches an event aggregator (``AsyncEventAggregatorCallback``)
to every run and never reads it; it is not awaited in place, so langchain-core makes an
asyncio task for it at every token (a quarter of the server's CPU relaying paced
streams). ``served_chain`` is the chain LangServe serves: the same schemas, name and runs,
with that callback dropped from ``astream``'s config.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langserve.callbacks import AsyncEventAggregatorCallback

from chains.bindings import PassThroughBinding

__all__ = ["served_chain"]


class _StreamWithoutAggregator(PassThroughBinding):
    """The chain, with LangServe's unread ``/stream`` event aggregator left out."""

    def astream(self, input: Any, config: RunnableConfig | None = None,
                **kwargs: Any) -> AsyncIterator[Any]:
        callbacks = (config or {}).get("callbacks")
        if isinstance(callbacks, list):
            config = {**(config or {}), "callbacks": [
                handler for handler in callbacks
                if not isinstance(handler, AsyncEventAggregatorCallback)]}
        return super().astream(input, config, **kwargs)


def served_chain(chain: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """``chain`` as LangServe should serve it (same schemas, name and runs)."""
    return _StreamWithoutAggregator(bound=chain)
