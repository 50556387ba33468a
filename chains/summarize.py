"""The summarize chain: short texts in one call; long ones map-reduce, with progress.

    from chains import summarize_chain
    for chunk in summarize_chain.stream({"text": open("relatorio.txt").read()}):
        print(chunk, end="", flush=True)

A text that does not fit the model's context is split (langchain-text-splitters), the
parts are summarised concurrently while progress lines (``> parte 2/5 resumida``)
stream, and the partial summaries are then summarised into the final, streamed answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_text_splitters import RecursiveCharacterTextSplitter
from pydantic import BaseModel, ConfigDict, Field

from maritaca import ChatMaritaca
from maritaca.models import get_model_info

from ._inputs import Language, coerce_input
from ._model import configurable_model
from ._parsers import InlineStrOutputParser
from ._prompts import load_prompt

CHARS_PER_TOKEN = 3  # conservative for Portuguese, so a "fitting" text really fits
RESERVED_TOKENS = 2_500  # the prompt's own words and the summary itself
MAP_CONCURRENCY = 4
DEFAULT_CONTEXT_TOKENS = 8_192  # for models outside the catalogue

LENGTHS = {"curto": "até 3 frases", "médio": "um parágrafo", "longo": "três parágrafos"}
FORMATS = {"parágrafo": "texto corrido", "tópicos": "lista de tópicos com marcadores"}


class SummarizeInput(BaseModel):
    """The text to summarise and the summary's shape."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=1_000_000,
                      description="The text to summarise; long texts are split and "
                                  "summarised part by part.")
    length: Literal["curto", "médio", "longo"] = Field(default="curto",
                                                       description="Summary length.")
    format: Literal["parágrafo", "tópicos"] = Field(default="parágrafo",
                                                    description="Prose or bullet points.")
    language: str = Language


def _context_tokens(model: BaseChatModel | None) -> int:
    name = model.model_name if isinstance(model, ChatMaritaca) else ""
    info = get_model_info(name)
    return info.context_length if info else DEFAULT_CONTEXT_TOKENS


def _shrunk(before: str, partials: list[str]) -> str:
    """The partial summaries, joined; refuses a round that did not shorten the text (a
    model that echoes would otherwise loop for ever)."""
    after = "\n\n".join(partials)
    if len(after) >= len(before):
        raise ValueError(f"summarising {len(before)} characters part by part gave "
                         f"{len(after)} characters: the model is not summarising; "
                         f"try a lower max_tokens or another model")
    return after


async def _limited(gate: asyncio.Semaphore, chain: Runnable[Any, str], value: dict[str, str],
                   config: RunnableConfig) -> str:
    async with gate:
        return await chain.ainvoke(value, config)


def build_summarize_chain(model: BaseChatModel | None = None, *,
                          context_tokens: int | None = None) -> Runnable[Any, str]:
    """Summarise ``SummarizeInput``; texts over the model's context go map-reduce.

    ``context_tokens`` overrides the context size read from the catalogue (e.g. 4096
    for the embedded backend).
    """
    prompt = load_prompt("summarize")
    llm = configurable_model(model)
    parser = InlineStrOutputParser()
    direct = prompt.template() | llm | parser
    mapper = prompt.template("map_messages") | llm | parser
    budget = max((context_tokens or _context_tokens(model)) - RESERVED_TOKENS, 500)
    budget_chars = budget * CHARS_PER_TOKEN
    splitter = RecursiveCharacterTextSplitter(chunk_size=budget_chars,
                                              chunk_overlap=min(200, budget_chars // 10))

    def variables(value: Any) -> dict[str, str]:
        s = coerce_input(SummarizeInput, value)
        return {"text": s.text, "length": LENGTHS[s.length], "format": FORMATS[s.format],
                "language": s.language}

    async def asummarize(value: Any, config: RunnableConfig) -> AsyncIterator[str]:
        values = variables(value)
        while len(values["text"]) > budget_chars:
            parts = splitter.split_text(values["text"])
            yield f"> Texto longo: resumindo {len(parts)} partes…\n"
            gate = asyncio.Semaphore(MAP_CONCURRENCY)
            tasks = [asyncio.ensure_future(_limited(gate, mapper, {**values, "text": part}, config))
                     for part in parts]
            try:
                for done, finished in enumerate(asyncio.as_completed(tasks), start=1):
                    await finished
                    yield f"> parte {done}/{len(parts)} resumida\n"
            finally:  # a cancelled run (client gone) stops every part at once
                for task in tasks:
                    task.cancel()
            values = {**values, "text": _shrunk(values["text"], [t.result() for t in tasks])}
            yield "\n"
        async for chunk in direct.astream(values, config):
            yield chunk

    def summarize(value: Any, config: RunnableConfig) -> Iterator[str]:
        values = variables(value)
        while len(values["text"]) > budget_chars:
            parts = splitter.split_text(values["text"])
            yield f"> Texto longo: resumindo {len(parts)} partes…\n"
            partials = []
            for done, part in enumerate(parts, start=1):
                partials.append(mapper.invoke({**values, "text": part}, config))
                yield f"> parte {done}/{len(parts)} resumida\n"
            values = {**values, "text": _shrunk(values["text"], partials)}
            yield "\n"
        yield from direct.stream(values, config)

    # RunnableLambda streams what generator functions yield; its type hints say otherwise
    chain = cast(Runnable[Any, str],
                 RunnableLambda(summarize, afunc=asummarize, name="summarize"))  # type: ignore[arg-type]
    return chain.with_types(input_type=SummarizeInput, output_type=str)
