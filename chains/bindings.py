"""Bindings that only type or describe a chain, without a generator layer per token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from langchain_core.runnables import RunnableBinding, RunnableConfig

__all__ = ["PassThroughBinding"]


class PassThroughBinding(RunnableBinding):  # type: ignore[type-arg]
    """A ``RunnableBinding`` whose ``astream`` is the bound runnable's own stream when the
    binding holds no config, config factories or kwargs of its own (LangChain's wraps it
    in a generator, one hop per token, and merges configs that add nothing); with any of
    those it streams as ``RunnableBinding`` does. Use it for bindings that only type or
    describe a chain."""

    def astream(self, input: Any, config: RunnableConfig | None = None,
                **kwargs: Any) -> AsyncIterator[Any]:
        if self.config or self.config_factories or self.kwargs:
            return super().astream(input, config, **kwargs)
        return self.bound.astream(input, config, **kwargs)
