"""``served_chain``: the chain as LangServe serves it, the same schemas, name and runs,
with two of LangServe's and langchain-core's habits left out:

- ``/stream`` attaches an event aggregator (``AsyncEventAggregatorCallback``) to every
  run and never reads it; it is not awaited in place, so langchain-core makes an asyncio
  task for it at every token (a quarter of the server's CPU relaying paced streams). It
  is dropped from ``astream``'s config.
- ``/batch`` runs the inputs with ``asyncio.gather``: when one fails, the request fails
  at once and the others run on as tasks nobody awaits. Their upstream requests close
  when the request ends (``closing_upstreams``), so they fail after the response, their
  ledger lines written then, unseen, or never if the server stops first. Here the first
  failure cancels them, and the error goes out once they have ended and been accounted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list
from langchain_core.runnables.utils import gated_coro
from langserve.callbacks import AsyncEventAggregatorCallback

from chains.bindings import PassThroughBinding

__all__ = ["served_chain"]


class _Served(PassThroughBinding):
    """The chain, with LangServe's unread ``/stream`` event aggregator left out, and a
    batch that stops at its first failure."""

    def astream(self, input: Any, config: RunnableConfig | None = None,
                **kwargs: Any) -> AsyncIterator[Any]:
        callbacks = (config or {}).get("callbacks")
        if isinstance(callbacks, list):
            config = {**(config or {}), "callbacks": [
                handler for handler in callbacks
                if not isinstance(handler, AsyncEventAggregatorCallback)]}
        return super().astream(input, config, **kwargs)

    async def abatch(self, inputs: list[Any],
                     config: RunnableConfig | list[RunnableConfig] | None = None,
                     *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        if return_exceptions or len(inputs) < 2:
            return await super().abatch(inputs, config, return_exceptions=return_exceptions,
                                        **kwargs)
        configs = get_config_list(config, len(inputs))
        limit = configs[0].get("max_concurrency")
        gate = asyncio.Semaphore(limit) if limit else None
        runs = [asyncio.ensure_future(run if gate is None else gated_coro(gate, run))
                for run in (self.ainvoke(value, one_config, **kwargs)
                            for value, one_config in zip(inputs, configs, strict=True))]
        try:
            return list(await asyncio.gather(*runs))
        except BaseException:
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)  # each run's end reported
            raise


def served_chain(chain: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """``chain`` as LangServe should serve it (same schemas, name and runs)."""
    return _Served(bound=chain)
