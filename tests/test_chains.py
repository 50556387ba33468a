"""The chain templates over the emulator: what they send, what they stream, what they refuse."""

from __future__ import annotations

import asyncio
from typing import get_args

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from pydantic import ValidationError

from chains import (
    CHAINS,
    MAX_TOKENS_RANGE,
    PROGRESS_EVENT,
    TEMPERATURE_RANGE,
    build_chains,
    build_qa_chain,
    build_story_chain,
    build_summarize_chain,
)
from maritaca import ChatMaritaca
from maritaca.testing import MaritacaEmulator
from tests.conftest import emulator_model


def _sent(emu: MaritacaEmulator, index: int = -1) -> dict:
    body = emu.requests[index].body
    assert body is not None
    return body


def _system(body: dict) -> str:
    return body["messages"][0]["content"]


@pytest.mark.parametrize("name", list(CHAINS))
def test_stream_concatenation_equals_invoke_equals_the_model_reply(emu, name):
    chain = build_chains(emulator_model(emu))[name]
    value = CHAINS[name].example
    chunks = list(chain.stream(value))
    expected = emu.expected_text(_sent(emu)["messages"])
    assert len(chunks) > 3 and "".join(chunks) == expected
    assert chain.invoke(value) == expected


@pytest.mark.parametrize("name", list(CHAINS))
async def test_async_stream_and_batch(emu, name):
    chain = build_chains(emulator_model(emu))[name]
    value = CHAINS[name].example
    text = "".join([c async for c in chain.astream(value)])
    assert text == emu.expected_text(_sent(emu)["messages"])
    assert await chain.abatch([value, value]) == [text, text]


def test_story_prompt_carries_the_options(emu):
    chain = build_story_chain(emulator_model(emu))
    chain.invoke({"topic": "um sabiá programador", "style": "cordel", "length": "longa",
                  "language": "English"})
    body = _sent(emu)
    assert body["messages"][-1] == {"role": "user", "content": "Tema: um sabiá programador"}
    system = _system(body)
    assert "Estilo: cordel" in system and "seis a oito parágrafos" in system
    assert "Idioma: English" in system


@pytest.mark.parametrize(("length", "budget"), [("curta", 300), ("média", 600), ("longa", 1200)])
def test_a_story_asks_for_the_tokens_its_length_needs(emu, length, budget):
    build_story_chain(emulator_model(emu)).invoke({"topic": "Brasil", "length": length})
    assert _sent(emu)["max_tokens"] == budget


@pytest.mark.parametrize("name", list(CHAINS))
def test_the_clients_max_tokens_wins_over_the_chains_budget(emu, name):
    chain = build_chains(emulator_model(emu))[name]
    chain.with_config(configurable={"max_tokens": 5000}).invoke(CHAINS[name].example)
    assert _sent(emu)["max_tokens"] == 5000


def test_a_model_that_sets_max_tokens_keeps_it(emu):
    chain = build_story_chain(emulator_model(emu, max_tokens=77))
    chain.invoke({"topic": "Brasil", "length": "longa"})
    assert _sent(emu)["max_tokens"] == 77


def test_the_schemas_max_tokens_default_is_0_the_chains_own_budget(emu):
    """A concrete number there became every run's budget as soon as LangServe filled a
    config (issue 25): 0 leaves the budget to the chain file."""
    chains = build_chains(emulator_model(emu))
    defaults = {name: next(s.default for s in chain.config_specs if s.id == "max_tokens")
                for name, chain in chains.items()}
    assert defaults == {"story": 0, "qa": 0, "summarize": 0, "chat": 0}
    chains["story"].with_config(configurable={"max_tokens": 0}).invoke({"topic": "x"})
    assert _sent(emu)["max_tokens"] == 300
    assert MAX_TOKENS_RANGE == (1, 32_000) and TEMPERATURE_RANGE == (0.0, 2.0)


def test_qa_answers_are_short_by_default(emu):
    build_qa_chain(emulator_model(emu)).invoke({"question": "Qual é a capital?"})
    assert _sent(emu)["max_tokens"] == 400


def test_qa_with_context_answers_only_from_it(emu):
    chain = build_qa_chain(emulator_model(emu))
    context = "A capital do Brasil é Brasília {não é um template}."
    chain.invoke({"question": "Qual é a capital?", "context": context})
    system = _system(_sent(emu))
    assert context in system
    assert "SOMENTE com base no contexto" in system
    assert "O contexto fornecido não contém essa informação." in system


def test_qa_without_context_uses_general_knowledge(emu):
    build_qa_chain(emulator_model(emu)).invoke({"question": "Qual é a capital?"})
    system = _system(_sent(emu))
    assert "conhecimento geral" in system and "<contexto>" not in system


def test_short_text_is_summarised_in_one_call(emu):
    chain = build_summarize_chain(emulator_model(emu))
    out = "".join(chain.stream({"text": "O sabiá canta. " * 20, "format": "tópicos"}))
    assert len(emu.requests) == 1 and out == emu.expected_text(_sent(emu)["messages"])
    assert "lista de tópicos" in _system(_sent(emu))
    # "tópicos" would get 200 tokens, but a summary is shorter than its 300-character text
    assert _sent(emu)["max_tokens"] == 150


LONG_TEXT = "\n\n".join(f"Parágrafo {i}: " + "o sabiá canta na palmeira. " * 12
                        for i in range(20))


class _Progress(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[dict] = []

    def on_custom_event(self, name, data, **kwargs) -> None:
        assert name == PROGRESS_EVENT
        self.events.append(data)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_long_text_goes_map_reduce_and_streams_the_summary_only(emu, mode):
    chain = build_summarize_chain(emulator_model(emu), context_tokens=3_000)  # ~1500 chars
    progress = _Progress()
    config = {"callbacks": [progress]}
    if mode == "sync":
        chunks = list(chain.stream({"text": LONG_TEXT}, config))
    else:
        chunks = [c async for c in chain.astream({"text": LONG_TEXT}, config)]
    parts = len(emu.requests) - 1
    assert parts >= 3
    # the text is the final summary, token by token, and nothing else
    assert "".join(chunks) == emu.expected_text(_sent(emu)["messages"]) and len(chunks) > 3
    # progress came apart from it, part by part
    assert progress.events == [{"round": 1, "done": i, "total": parts}
                               for i in range(parts + 1)]
    # the reduce step summarised exactly the partial summaries
    partials = [emu.expected_text(r.body["messages"]) for r in emu.requests[:-1]]
    reduce_text = _sent(emu)["messages"][-1]["content"]
    assert all(p in reduce_text for p in partials)
    # each part may take at most half its own size; the summary its length's budget
    assert all(r.body["max_tokens"] <= 260 for r in emu.requests[:-1])
    assert _sent(emu)["max_tokens"] == 150


async def test_progress_reaches_astream_events_and_leaving_stops_the_remaining_parts():
    with MaritacaEmulator(reply_tokens=30, token_delay=0.02) as emu:
        chain = build_summarize_chain(emulator_model(emu), context_tokens=3_000)
        text = "\n\n".join("o sabiá canta na palmeira. " * 12 for _ in range(20))
        events = chain.astream_events({"text": text}, version="v2")
        async for event in events:
            if event["event"] == "on_custom_event":
                assert event["name"] == PROGRESS_EVENT
                assert event["data"]["done"] == 0 and event["data"]["total"] >= 5
                break
        for _ in range(100):  # the first parts start
            if emu.requests:
                break
            await asyncio.sleep(0.01)
        await events.aclose()
        # A part request already on the wire may reach the emulator just after the close,
        # so count only once the parts have settled. Each part streams for about 0.6 s
        # (30 tokens, 0.02 s apart): had leaving not stopped the map, a fifth part would
        # start within this wait, when one of the first four ended.
        await asyncio.sleep(1.2)
        assert 1 <= len(emu.requests) <= 4  # at most MAP_CONCURRENCY parts ever started
        assert all(r.client_disconnected for r in emu.requests)


def test_configurable_fields_are_model_temperature_and_max_tokens_only(emu):
    chain = build_story_chain(emulator_model(emu))
    assert {spec.id for spec in chain.config_specs} == {"model", "temperature", "max_tokens"}
    model_spec = next(s for s in chain.config_specs if s.id == "model")
    # the playground shows max_tokens' default, 0, under this name: it must say what 0 is
    assert next(s.name for s in chain.config_specs if s.id == "max_tokens") == \
        "Máximo de tokens (0 = automático)"
    assert {"sabia-4", "sabiazinho-4"} <= set(get_args(model_spec.annotation))
    configured = chain.with_config(configurable={"model": "sabiazinho-4", "temperature": 0,
                                                 "max_tokens": 50})
    configured.invoke({"topic": "Brasil"})
    body = _sent(emu)
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("sabiazinho-4", 0, 50)


def test_a_model_outside_the_catalogue_is_refused_by_configurable(emu):
    chain = build_story_chain(emulator_model(emu))
    with pytest.raises(ValueError, match="'gpt-4' does not answer here"):
        chain.with_config(configurable={"model": "gpt-4"}).invoke({"topic": "Brasil"})
    assert emu.requests == []


def test_any_chat_model_can_drive_a_chain():
    fake = GenericFakeChatModel(messages=iter([AIMessage(content="Era uma vez um sabiá.")]))
    assert "".join(build_story_chain(fake).stream({"topic": "x"})) == "Era uma vez um sabiá."


def test_inline_parser_gives_what_str_output_parser_gives(emu):
    model = emulator_model(emu)
    ours = "".join(build_story_chain(model).stream({"topic": "Brasil"}))
    prompt_value = {"messages": _sent(emu)["messages"]}
    reference = "".join((model | StrOutputParser()).stream(
        [(m["role"].replace("user", "human").replace("assistant", "ai"), m["content"])
         for m in prompt_value["messages"]]))
    assert ours == reference


@pytest.mark.parametrize(("chain_name", "value", "field"), [
    ("story", {"topic": ""}, "topic"),
    ("story", {"topic": "x", "length": "enorme"}, "length"),
    ("qa", {"question": "q", "context": 1}, "context"),
    ("summarize", {"text": "t", "format": "tabela"}, "format"),
    ("summarize", {"txt": "t"}, "text"),
    ("story", {"topic": " \n\t "}, "topic"),
    ("story", {"topic": "x", "style": "  "}, "style"),
    ("qa", {"question": "   "}, "question"),
    ("qa", {"question": "q", "context": "\n\n"}, "context"),
    ("qa", {"question": "q", "language": "   "}, "language"),
    ("summarize", {"text": "   "}, "text"),
])
def test_bad_input_names_the_field_before_any_request(emu, chain_name, value, field):
    chain = build_chains(emulator_model(emu))[chain_name]
    with pytest.raises(ValidationError, match=field):
        chain.invoke(value)
    assert emu.requests == []


def test_whitespace_only_is_refused_in_words_a_client_can_act_on(emu):
    with pytest.raises(ValidationError) as info:
        build_story_chain(emulator_model(emu)).invoke({"topic": "   "})
    (error,) = info.value.errors()
    assert error["loc"] == ("topic",) and "only whitespace" in error["msg"]


def test_every_builder_takes_the_same_arguments(emu):
    for spec in CHAINS.values():
        chain = spec.build(emulator_model(emu), context_tokens=4_096)
        assert chain.invoke(spec.example)


def test_module_level_chains_need_a_key_or_the_local_backend(monkeypatch):
    monkeypatch.delenv("MARITACA_API_KEY", raising=False)
    monkeypatch.delenv("MARITACA_BASE_URL", raising=False)
    from chains import story_chain

    with pytest.raises(Exception, match="MARITACA_API_KEY") as info:
        next(iter(story_chain.stream({"topic": "Brasil"})))
    assert "maritaca.local" in str(info.value)


def test_chains_are_built_on_chat_maritaca_by_default(monkeypatch):
    monkeypatch.setenv("MARITACA_API_KEY", "k")
    chain = build_qa_chain()
    models = [s for s in chain.config_specs if s.id == "model"]
    assert models and ChatMaritaca().model_name in str(models[0].default)


def test_a_model_that_does_not_shorten_the_parts_stops_with_a_clear_error():
    with MaritacaEmulator(reply_tokens=800) as emu:  # each "summary" outgrows its part
        chain = build_summarize_chain(emulator_model(emu), context_tokens=3_000)
        text = "\n\n".join("o sabiá canta na palmeira. " * 12 for _ in range(8))
        with pytest.raises(ValueError, match="not summarising"):  # the client's max_tokens
            list(chain.with_config(configurable={"max_tokens": 800}).stream({"text": text}))
