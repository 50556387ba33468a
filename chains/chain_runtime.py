"""A ``ChainFile`` made runnable: its typed input model and its LCEL chain.

``input_model(name, file)`` is the pydantic model of the chain's input (what LangServe
validates and the UI's form is generated from); ``build_chain(name, file, model)`` is
the streaming chain: ``input | prompt | model | parser`` with the token budget the input
asks for, or map-reduce over a field too long for the model's context. Nothing here is
specific to one chain: every chain, built-in or from a directory, is built the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, ClassVar, Literal, cast

from langchain_core.callbacks import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.outputs import Generation
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableBranch, RunnableConfig, RunnableLambda
from langchain_text_splitters import RecursiveCharacterTextSplitter
from pydantic import BaseModel, ConfigDict, Field, create_model

from maritaca import ChatMaritaca
from maritaca.models import get_model_info

from ._inputs import Text, coerce_input
from ._model import configurable_model, with_budget
from ._parsers import InlineStrOutputParser
from ._run import AutoBudgetChain, astream_closed, auto_budget, budgeted_chain, stream_closed
from .chain_file import DEFAULT_TEXT_LIMIT, ChainFile, InputSpec, Message
from .limits import MAX_TOKENS_RANGE

__all__ = ["HISTORY_FIELD", "PROGRESS_EVENT", "ChainInput", "JsonChain", "JsonOutputError", "build_chain",
           "input_model", "render_messages", "validate_json"]

PROGRESS_EVENT = "summarize_progress"  # a map-reduce's progress: {"round", "done", "total"}
CHARS_PER_TOKEN = 3  # conservative for Portuguese, so a "fitting" text really fits
RESERVED_TOKENS = 2_500  # the prompt's own words and the answer itself
MAP_CONCURRENCY = 4
DEFAULT_CONTEXT_TOKENS = 8_192  # for models outside the catalogue
MIN_BUDGET = 150  # the fewest tokens a map-reduced answer, or a part's, is given


class ChainInput(BaseModel):
    """Base of every chain's input model; ``main_field`` is the field a plain text fills."""

    model_config = ConfigDict(extra="forbid")
    main_field: ClassVar[str] = ""
    chain_name: ClassVar[str] = ""


class JsonOutputError(ValueError):
    """A JSON chain's answer is not JSON, or does not follow the chain's schema."""


def _camel(name: str) -> str:
    special = {"qa": "QA"}
    return special.get(name) or "".join(p[:1].upper() + p[1:] for p in
                                        name.replace("-", "_").split("_"))


def _field(name: str, spec: InputSpec) -> tuple[Any, Any]:
    extra: dict[str, Any] = {}
    if spec.placeholder:
        extra["x-placeholder"] = spec.placeholder
    if spec.lines > 1:
        extra["x-lines"] = spec.lines
    if spec.hidden:
        extra["x-hidden"] = True
    common: dict[str, Any] = {"description": spec.description or None,
                              "title": spec.label or None,
                              "examples": spec.examples or None,
                              "json_schema_extra": extra or None}
    default = ... if spec.required else spec.default
    if spec.type == "text":
        low = spec.min_length if spec.min_length is not None else (1 if spec.required else 0)
        return Text, Field(default, min_length=low,
                           max_length=spec.max_length or DEFAULT_TEXT_LIMIT, **common)
    if spec.type == "choice":
        return Literal[tuple(spec.choices)], Field(default, **common)  # type: ignore[misc]
    if spec.type == "boolean":
        return bool, Field(default, **common)
    kind: Any = int if spec.type == "integer" else float
    return Annotated[kind, Field(ge=spec.minimum, le=spec.maximum)], Field(default, **common)


def input_model(name: str, file: ChainFile) -> type[ChainInput]:
    """The pydantic model of ``name``'s input, e.g. ``StoryInput`` (extra keys refused)."""
    fields = {field: _field(field, spec) for field, spec in file.inputs.items()}
    model = create_model(f"{_camel(name)}Input", __base__=ChainInput,  # type: ignore[call-overload]
                         __doc__=file.description, **fields)
    model.main_field = file.main_field
    model.chain_name = name
    return cast(type[ChainInput], model)


HISTORY_FIELD = "history"  # a conversation chain's earlier turns, beside its inputs


def _template(messages: list[Message], history: bool = False) -> ChatPromptTemplate:
    parts: list[Any] = [(m.role, m.content) for m in messages]
    if history:  # the earlier turns, right before the new (last, user) message
        parts.insert(len(parts) - 1, MessagesPlaceholder(HISTORY_FIELD, optional=True))
    return ChatPromptTemplate.from_messages(parts)


def _history(value: Any) -> tuple[Any, list[BaseMessage]]:
    """A conversation's input without its ``history`` (earlier turns: messages,
    ``(role, text)`` pairs or ``{"role", "content"}`` dicts), and those turns."""
    if isinstance(value, dict) and HISTORY_FIELD in value:
        value = dict(value)
        turns = value.pop(HISTORY_FIELD) or []
        if not isinstance(turns, list):
            raise ValueError("history must be a list of messages (role and text)")
        return value, convert_to_messages(turns)
    return value, []


def _context_tokens(model: BaseChatModel | None) -> int:
    name = model.model_name if isinstance(model, ChatMaritaca) else ""
    info = get_model_info(name)
    return info.context_length if info else DEFAULT_CONTEXT_TOKENS


class _Words:
    """An input's values as the prompt says them, and the budget they ask for."""

    def __init__(self, file: ChainFile, input_type: type[BaseModel]) -> None:
        self.file, self.input_type = file, input_type
        self.history = file.history == "thread"
        # the variants' conditions, compared as the prompt says them
        self.variants = [(_template(v.messages, self.history),
                          {f: file.inputs[f].as_words(x) for f, x in v.when.items()})
                         for v in file.variants.values()]
        self.main = _template(file.messages, self.history)

    def values(self, value: Any) -> tuple[BaseModel, dict[str, str]]:
        """The input as its model, and the prompt's values (a conversation's ``history``
        among them: its earlier turns, taken from the input beside its fields)."""
        turns: list[BaseMessage] = []
        if self.history:
            value, turns = _history(value)
        inputs = coerce_input(self.input_type, value)
        values = {name: spec.as_words(getattr(inputs, name))
                  for name, spec in self.file.inputs.items()}
        if self.history:
            values[HISTORY_FIELD] = turns  # type: ignore[assignment]
        return inputs, values

    def budget(self, inputs: BaseModel) -> int:
        added = sum(spec.budget(getattr(inputs, name))
                    for name, spec in self.file.inputs.items())
        return min(self.file.max_tokens + added, MAX_TOKENS_RANGE[1])

    def pick(self, values: dict[str, str]) -> ChatPromptTemplate:
        """The messages for these values: the first variant whose ``when`` they match,
        else the main ones."""
        for template, when in self.variants:
            if all(values.get(k) == v for k, v in when.items()):
                return template
        return self.main

    def chain(self, llm: Runnable[Any, Any]) -> Runnable[dict[str, str], str]:
        """``prompt | llm | parser``; with variants, a branch of such sequences (LCEL
        streams a branch itself; a plain sequence takes ``_direct``'s path)."""
        parser = InlineStrOutputParser()
        if not self.variants:
            return self.main | llm | parser

        def matches(when: dict[str, str]) -> Any:
            return lambda values: all(values.get(k) == v for k, v in when.items())

        return RunnableBranch[dict[str, str], str](
            *[(matches(when), template | llm | parser) for template, when in self.variants],
            self.main | llm | parser)

    def render(self, value: Any) -> tuple[list[tuple[str, str]], int]:
        """The messages ``value`` produces (role, content) and its token budget."""
        inputs, values = self.values(value)
        prompt = self.pick(values).invoke(values)
        roles = {"human": "user", "ai": "assistant"}
        return [(roles.get(m.type, m.type), str(m.content)) for m in prompt.to_messages()], \
            self.budget(inputs)


def render_messages(name: str, file: ChainFile, value: Any,
                    input_type: type[BaseModel] | None = None
                    ) -> tuple[list[tuple[str, str]], int]:
    """What the model is sent for ``value`` (the main messages, or the variant it picks),
    and the answer's token budget: ``maritaca-chains check --render``."""
    return _Words(file, input_type or input_model(name, file)).render(value)


def build_chain(name: str, file: ChainFile, model: BaseChatModel | None = None, *,
                context_tokens: int | None = None,
                input_type: type[ChainInput] | None = None) -> Runnable[Any, Any]:
    """``name``'s chain on ``model`` (default ``ChatMaritaca()``). ``context_tokens``
    overrides the model's context size (a map-reduce strategy splits by it);
    ``input_type`` is the chain's input model (default: made from the file)."""
    input_type = input_type or input_model(name, file)
    words = _Words(file, input_type)
    llm: Runnable[Any, Any] = configurable_model(model, max_tokens=file.largest_budget())
    if file.output_kind == "json" and (model is None or isinstance(model, ChatMaritaca)):
        # ChatMaritaca asks the API for JSON following the schema; another chat model is
        # asked by the chain's own messages, and its answer is validated all the same
        llm = llm.bind(response_format=_response_format(name, file))
    if file.strategy is not None:
        text_chain = _map_reduce(name, file, words, llm, model, context_tokens)
    else:
        inner = words.chain(llm)

        def prepare(value: Any) -> tuple[dict[str, str], int]:
            inputs, values = words.values(value)
            return values, words.budget(inputs)

        text_chain = budgeted_chain(inner, prepare, model, name=name, input_type=input_type)
    if file.output_kind == "text":
        return text_chain
    return _json_chain(name, file, text_chain, input_type)


def _response_format(name: str, file: ChainFile) -> dict[str, Any]:
    schema = file.output.json_schema if not isinstance(file.output, str) else {}
    # not "strict": a strict schema must close every object and require every property,
    # which a chain file need not; the answer is validated against the schema here anyway
    return {"type": "json_schema", "json_schema": {"name": name.replace("-", "_"),
                                                   "schema": schema}}


# ------------------------------------------------------------------------- JSON output
def validate_json(file: ChainFile, text: str) -> Any:
    """The answer's JSON, checked against the chain's schema (JsonOutputError if not)."""
    from jsonschema import Draft202012Validator

    try:
        value = json.loads(_unfenced(text))
    except ValueError as exc:
        raise JsonOutputError(f"the answer is not JSON ({exc}): {text[:200]!r}") from exc
    schema = file.output.json_schema if not isinstance(file.output, str) else {}
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: e.path)
    if errors:
        first = errors[0]
        where = "/".join(map(str, first.path)) or "(the whole answer)"
        raise JsonOutputError(f"the answer does not follow the chain's JSON Schema at "
                              f"{where}: {first.message}")
    return value


def _unfenced(text: str) -> str:
    """The JSON inside a ```json fence, as models sometimes write it."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped


class PartialObjects:
    """A JSON answer read as it streams: each text chunk may complete a new partial
    object (``add`` returns it, or None when nothing new parsed); ``final`` validates the
    whole text against the chain file and returns it unless the last partial was it."""

    def __init__(self, parser: JsonOutputParser) -> None:
        self._parser = parser
        self._parts: list[str] = []
        self._last: Any = None

    def add(self, chunk: str) -> Any:
        self._parts.append(chunk)
        try:
            partial = self._parser.parse_result([Generation(text="".join(self._parts))],
                                                partial=True)
        except ValueError:
            return None
        if partial is None or partial == self._last:
            return None
        self._last = partial
        return partial

    def final(self, file: ChainFile) -> Any:
        final = validate_json(file, "".join(self._parts))
        return None if final == self._last else final


def _json_chain(name: str, file: ChainFile, text_chain: Runnable[Any, str],
                input_type: type[BaseModel]) -> Runnable[Any, Any]:
    """The chain whose stream is partial objects and whose result is the validated JSON;
    its ``text_chain`` streams the raw JSON text instead, validated at its end."""
    parser = JsonOutputParser()

    async def atext(value: Any, config: RunnableConfig) -> AsyncIterator[str]:
        parts: list[str] = []
        async for chunk in astream_closed(text_chain, value, config):
            parts.append(chunk)
            yield chunk
        validate_json(file, "".join(parts))

    def text(value: Any, config: RunnableConfig) -> Iterator[str]:
        parts: list[str] = []
        for chunk in stream_closed(text_chain, value, config):
            parts.append(chunk)
            yield chunk
        validate_json(file, "".join(parts))

    # the sync and async streams share one PartialObjects: only the loop differs
    async def aobjects(value: Any, config: RunnableConfig) -> AsyncIterator[Any]:
        reader = PartialObjects(parser)
        async for chunk in astream_closed(text_chain, value, config):
            if (partial := reader.add(chunk)) is not None:
                yield partial
        if (final := reader.final(file)) is not None:
            yield final

    def objects(value: Any, config: RunnableConfig) -> Iterator[Any]:
        reader = PartialObjects(parser)
        for chunk in stream_closed(text_chain, value, config):
            if (partial := reader.add(chunk)) is not None:
                yield partial
        if (final := reader.final(file)) is not None:
            yield final

    text_runnable = auto_budget(RunnableLambda(text, afunc=atext, name=name),  # type: ignore[arg-type]
                                input_type)
    chain = JsonChain(bound=RunnableLambda(objects, afunc=aobjects, name=name),  # type: ignore[arg-type]
                      text_chain=text_runnable, custom_input_type=input_type,
                      custom_output_type=dict)
    return chain


class JsonChain(AutoBudgetChain):
    """A JSON chain: streams partial objects, returns the validated object;
    ``text_chain`` is the same run streaming the raw JSON text (for plain-text faces:
    ``/text``, ``/ws``, the UI, resumable runs)."""

    text_chain: Runnable[Any, str] | None = None

    def with_config(self, config: RunnableConfig | None = None,
                    **kwargs: Any) -> JsonChain:
        """The same chain configured; its ``text_chain`` configured alike."""
        configured = super().with_config(config, **kwargs)
        text = self.text_chain.with_config(config, **kwargs) if self.text_chain else None
        return configured.model_copy(update={"text_chain": text})  # type: ignore[attr-defined,no-any-return]


# -------------------------------------------------------------------------- map-reduce
def _fits(budget: int, text: str, share: float = 1.0) -> int:
    """``budget``, but no more than ``share`` of the text's own size: a summary is shorter
    than what it summarises."""
    return max(MIN_BUDGET, min(budget, int(len(text) / CHARS_PER_TOKEN * share)))


def _shrunk(before: str, partials: list[str]) -> str:
    """The partial answers, joined; refuses a round that did not shorten the text (a
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


def _map_reduce(name: str, file: ChainFile, words: _Words, llm: Runnable[Any, Any],
                model: BaseChatModel | None,
                context_tokens: int | None) -> Runnable[Any, str]:
    """Short inputs in one call; a ``field`` over the model's context is split, its parts
    answered concurrently with the map messages, and the joined partial answers go
    through the main messages (streamed). Progress: ``PROGRESS_EVENT`` custom events."""
    assert file.strategy is not None
    plan = file.strategy.map_reduce
    field = plan.field
    direct = words.chain(llm)
    mapper = _template(plan.messages) | llm | InlineStrOutputParser()
    budget = max((context_tokens or _context_tokens(model)) - RESERVED_TOKENS, 500)
    budget_chars = budget * CHARS_PER_TOKEN
    splitter = RecursiveCharacterTextSplitter(chunk_size=budget_chars,
                                              chunk_overlap=min(200, budget_chars // 10))

    def map_config(config: RunnableConfig, part: str) -> RunnableConfig:
        return with_budget(config, _fits(plan.max_tokens, part, 0.5), model)

    def final_config(config: RunnableConfig, inputs: BaseModel, text: str) -> RunnableConfig:
        return with_budget(config, _fits(words.budget(inputs), text), model)

    async def arun(value: Any, config: RunnableConfig) -> AsyncIterator[str]:
        inputs, values = words.values(value)
        round_ = 0
        while len(values[field]) > budget_chars:
            parts = splitter.split_text(values[field])
            round_ += 1
            progress = {"round": round_, "done": 0, "total": len(parts)}
            await adispatch_custom_event(PROGRESS_EVENT, progress, config=config)
            gate = asyncio.Semaphore(MAP_CONCURRENCY)
            tasks = [asyncio.ensure_future(_limited(gate, mapper, {**values, field: part},
                                                    map_config(config, part)))
                     for part in parts]
            try:
                for done, finished in enumerate(asyncio.as_completed(tasks), start=1):
                    await finished
                    await adispatch_custom_event(PROGRESS_EVENT, {**progress, "done": done},
                                                 config=config)
            finally:  # a cancelled run (client gone) stops every part at once
                for task in tasks:
                    task.cancel()
            values = {**values, field: _shrunk(values[field], [t.result() for t in tasks])}
        async for chunk in astream_closed(direct, values,
                                          final_config(config, inputs, values[field])):
            yield chunk

    def run(value: Any, config: RunnableConfig) -> Iterator[str]:
        inputs, values = words.values(value)
        round_ = 0
        while len(values[field]) > budget_chars:
            parts = splitter.split_text(values[field])
            round_ += 1
            progress = {"round": round_, "done": 0, "total": len(parts)}
            dispatch_custom_event(PROGRESS_EVENT, progress, config=config)
            partials = []
            for done, part in enumerate(parts, start=1):
                partials.append(mapper.invoke({**values, field: part}, map_config(config, part)))
                dispatch_custom_event(PROGRESS_EVENT, {**progress, "done": done}, config=config)
            values = {**values, field: _shrunk(values[field], partials)}
        yield from stream_closed(direct, values, final_config(config, inputs, values[field]))

    # RunnableLambda streams what generator functions yield; its type hints say otherwise
    chain = cast(Runnable[Any, str],
                 RunnableLambda(run, afunc=arun, name=name))  # type: ignore[arg-type]
    return auto_budget(chain, words.input_type)
