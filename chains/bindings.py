"""Bindings that only type or describe a chain, without work per token or per run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from langchain_core.runnables import RunnableBinding, RunnableConfig

__all__ = ["PassThroughBinding"]


class PassThroughBinding(RunnableBinding):  # type: ignore[type-arg]
    """A ``RunnableBinding`` whose ``astream`` and ``astream_events`` (versions v1 and v2)
    are the bound runnable's own when the binding holds no config, config factories or
    kwargs of its own: LangChain's wraps the stream in a generator, one hop per token,
    and merges configs that add nothing (twice per call); with any of those it streams
    as ``RunnableBinding`` does. Use it for bindings that only type or describe a
    chain."""

    def _adds_nothing(self) -> bool:
        return not (self.config or self.config_factories or self.kwargs)

    def astream(self, input: Any, config: RunnableConfig | None = None,
                **kwargs: Any) -> AsyncIterator[Any]:
        if self._adds_nothing():
            return self.bound.astream(input, config, **kwargs)
        return super().astream(input, config, **kwargs)

    def astream_events(self, input: Any, config: RunnableConfig | None = None,
                       **kwargs: Any) -> Any:
        if self._adds_nothing() and kwargs.get("version", "v2") in ("v1", "v2"):
            return self.bound.astream_events(input, config, **kwargs)
        return super().astream_events(input, config, **kwargs)
