"""The summarize chain: short texts in one call; long ones map-reduce.

    from chains import summarize_chain
    for chunk in summarize_chain.stream({"text": open("relatorio.txt").read()}):
        print(chunk, end="", flush=True)

A text that does not fit the model's context is split (langchain-text-splitters), the
parts are summarised concurrently, and the partial summaries are then summarised into
the final, streamed answer. The stream carries the summary only; the progress of the
parts is a custom event, for those who want it:

    async for event in summarize_chain.astream_events({"text": long_text}):
        if event["event"] == "on_custom_event" and event["name"] == PROGRESS_EVENT:
            print(event["data"])  # {"round": 1, "done": 2, "total": 5}
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, cast

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_text_splitters import RecursiveCharacterTextSplitter
from pydantic import BaseModel, ConfigDict, Field

from maritaca import ChatMaritaca
from maritaca.models import get_model_info

from ._inputs import Language, Text, coerce_input
from ._model import configurable_model, with_budget
from ._parsers import InlineStrOutputParser
from ._prompts import load_prompt
from ._run import astream_closed, stream_closed

PROGRESS_EVENT = "summarize_progress"
CHARS_PER_TOKEN = 3  # conservative for Portuguese, so a "fitting" text really fits
RESERVED_TOKENS = 2_500  # the prompt's own words and the summary itself
MAP_CONCURRENCY = 4
DEFAULT_CONTEXT_TOKENS = 8_192  # for models outside the catalogue
MIN_BUDGET = 150  # the fewest tokens a summary, or a part's, is given


class SummarizeInput(BaseModel):
    """The text to summarise and the summary's shape."""

    model_config = ConfigDict(extra="forbid")

    text: Text = Field(min_length=1, max_length=1_000_000,
                       description="The text to summarise; long texts are split and "
                                   "summarised part by part.")
    length: Literal["curto", "médio", "longo"] = Field(default="curto",
                                                       description="Summary length.")
    format: Literal["parágrafo", "tópicos"] = Field(default="parágrafo",
                                                    description="Prose or bullet points.")
    language: Text = Language


def _context_tokens(model: BaseChatModel | None) -> int:
    name = model.model_name if isinstance(model, ChatMaritaca) else ""
    info = get_model_info(name)
    return info.context_length if info else DEFAULT_CONTEXT_TOKENS


def _fits(budget: int, text: str, share: float = 1.0) -> int:
    """``budget``, but no more than ``share`` of the text's own size: a summary is shorter
    than what it summarises."""
    return max(MIN_BUDGET, min(budget, int(len(text) / CHARS_PER_TOKEN * share)))


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
    llm = configurable_model(model, max_tokens=prompt.largest_budget())
    parser = InlineStrOutputParser()
    direct = prompt.template() | llm | parser
    mapper = prompt.template("map") | llm | parser
    budget = max((context_tokens or _context_tokens(model)) - RESERVED_TOKENS, 500)
    budget_chars = budget * CHARS_PER_TOKEN
    splitter = RecursiveCharacterTextSplitter(chunk_size=budget_chars,
                                              chunk_overlap=min(200, budget_chars // 10))

    def prepare(value: Any) -> tuple[SummarizeInput, dict[str, str]]:
        inputs = coerce_input(SummarizeInput, value)
        return inputs, prompt.values(inputs)

    def map_config(config: RunnableConfig, inputs: SummarizeInput, part: str) -> RunnableConfig:
        return with_budget(config, _fits(prompt.budget(inputs, "map"), part, 0.5), model)

    def final_config(config: RunnableConfig, inputs: SummarizeInput, text: str) -> RunnableConfig:
        return with_budget(config, _fits(prompt.budget(inputs), text), model)

    async def asummarize(value: Any, config: RunnableConfig) -> AsyncIterator[str]:
        inputs, values = prepare(value)
        round_ = 0
        while len(values["text"]) > budget_chars:
            parts = splitter.split_text(values["text"])
            round_ += 1
            progress = {"round": round_, "done": 0, "total": len(parts)}
            await adispatch_custom_event(PROGRESS_EVENT, progress, config=config)
            gate = asyncio.Semaphore(MAP_CONCURRENCY)
            tasks = [asyncio.ensure_future(_limited(gate, mapper, {**values, "text": part},
                                                    map_config(config, inputs, part)))
                     for part in parts]
            try:
                for done, finished in enumerate(asyncio.as_completed(tasks), start=1):
                    await finished
                    await adispatch_custom_event(PROGRESS_EVENT, {**progress, "done": done},
                                                 config=config)
            finally:  # a cancelled run (client gone) stops every part at once
                for task in tasks:
                    task.cancel()
            values = {**values, "text": _shrunk(values["text"], [t.result() for t in tasks])}
        async for chunk in astream_closed(direct, values,
                                          final_config(config, inputs, values["text"])):
            yield chunk

    def summarize(value: Any, config: RunnableConfig) -> Iterator[str]:
        inputs, values = prepare(value)
        round_ = 0
        while len(values["text"]) > budget_chars:
            parts = splitter.split_text(values["text"])
            round_ += 1
            progress = {"round": round_, "done": 0, "total": len(parts)}
            dispatch_custom_event(PROGRESS_EVENT, progress, config=config)
            partials = []
            for done, part in enumerate(parts, start=1):
                partials.append(mapper.invoke({**values, "text": part},
                                              map_config(config, inputs, part)))
                dispatch_custom_event(PROGRESS_EVENT, {**progress, "done": done}, config=config)
            values = {**values, "text": _shrunk(values["text"], partials)}
        yield from stream_closed(direct, values, final_config(config, inputs, values["text"]))

    # RunnableLambda streams what generator functions yield; its type hints say otherwise
    chain = cast(Runnable[Any, str],
                 RunnableLambda(summarize, afunc=asummarize, name="summarize"))  # type: ignore[arg-type]
    return chain.with_types(input_type=SummarizeInput, output_type=str)
