"""Bindings that only type or describe a chain, without work per token or per run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from langchain_core.runnables import RunnableBinding, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config

__all__ = ["PassThroughBinding"]


class PassThroughBinding(RunnableBinding):  # type: ignore[type-arg]
    """A ``RunnableBinding`` whose ``astream`` and ``astream_events`` (v1, v2) are the
    bound runnable's own when LangChain's config merge would change nothing for the run
    (``passes_through``): LangChain's wraps the stream in a generator, one hop per
    token, and merges the configs twice per call. Otherwise it streams as
    ``RunnableBinding`` does. Use it for bindings that only type or describe a chain.

    One difference remains on the pass-through path: the config is read when the stream
    starts (as the bound runnable's own ``astream`` does), not when it is called."""

    def passes_through(self, config: RunnableConfig | None) -> bool:
        """Whether ``RunnableBinding``'s merge would leave ``config`` as the run sees it:
        the binding adds no config, factories or kwargs; no run is in progress around
        the call (the merge folds that run's config in: its callbacks make this run its
        child); and the tags are as the merge leaves them, sorted, each once."""
        if self.config or self.config_factories or self.kwargs \
                or var_child_runnable_config.get() is not None:
            return False
        tags = config.get("tags") if config else None
        return not tags or list(tags) == sorted(set(tags))

    def astream(self, input: Any, config: RunnableConfig | None = None,
                **kwargs: Any) -> AsyncIterator[Any]:
        if self.passes_through(config):
            return self.bound.astream(input, config, **kwargs)
        return super().astream(input, config, **kwargs)

    def astream_events(self, input: Any, config: RunnableConfig | None = None,
                       **kwargs: Any) -> Any:
        if kwargs.get("version", "v2") in ("v1", "v2") and self.passes_through(config):
            return self.bound.astream_events(input, config, **kwargs)
        return super().astream_events(input, config, **kwargs)
