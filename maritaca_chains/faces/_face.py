"""One chain as the extra faces see it: its input type, main field, and its chunks."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

from langchain_core.runnables import Runnable
from pydantic import BaseModel

from chains import CHAINS
from maritaca import closing_upstreams

__all__ = ["Face"]


class Face:
    """One chain, with its input type and main field."""

    def __init__(self, name: str, chain: Runnable[Any, str]) -> None:
        self.name, self.chain = name, chain
        self.input_type = cast(type[BaseModel], chain.get_input_schema())
        spec = CHAINS.get(name)
        self.main_field = spec.main_field if spec and spec.main_field else next(
            n for n, f in self.input_type.model_fields.items() if f.is_required())

    def parse(self, text: str) -> BaseModel:
        """A WebSocket/UI message as the chain input (ValueError/ValidationError if bad)."""
        if text.lstrip().startswith("{"):
            return self.input_type.model_validate_json(text)
        return self.input_type.model_validate({self.main_field: text})

    async def chunks(self, value: BaseModel) -> AsyncGenerator[str, None]:
        """The run's non-empty chunks; the upstream stream is closed however this ends
        (also when a cancellation strands langchain-core's inner generators, as Gradio's
        Stop can: ``closing_upstreams`` closes what the run opened)."""
        stream = cast(AsyncGenerator[str, None], self.chain.astream(value))  # an async gen
        with closing_upstreams():
            async with aclosing(stream):
                async for chunk in stream:
                    if chunk:
                        yield chunk
