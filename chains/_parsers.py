"""A string output parser that parses each chunk inline.

langchain-core's ``StrOutputParser`` sends every streamed chunk through
``run_in_executor`` in its async path: a thread-pool hop per token, the largest single
cost of relaying a chunk through LangServe (a py-spy profile shows it). Taking a chunk's text is cheap
enough to do on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser


def text_of(chunk: str | BaseMessage) -> str:
    """A streamed chunk's text, as ``StrOutputParser`` takes it."""
    return chunk.text if isinstance(chunk, BaseMessage) else chunk


class InlineStrOutputParser(StrOutputParser):
    """``StrOutputParser`` with the same text, parsed on the event loop; empty chunks
    (e.g. the model's closing metadata chunk) are not passed on."""

    def _transform(self, input: Iterator[str | BaseMessage]) -> Iterator[str]:
        for chunk in input:
            if text := text_of(chunk):
                yield text

    async def _atransform(self, input: AsyncIterator[str | BaseMessage]) -> AsyncIterator[str]:
        async for chunk in input:
            if text := text_of(chunk):
                yield text
