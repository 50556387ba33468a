"""The chain templates over the emulator: what they send, what they stream, what they refuse."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from pydantic import ValidationError

from chains import (
    CHAINS,
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
    assert len(emu.requests) == 1 and not out.startswith(">")
    assert "lista de tópicos" in _system(_sent(emu))


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_long_text_goes_map_reduce_with_progress(emu, mode):
    chain = build_summarize_chain(emulator_model(emu), context_tokens=3_000)  # ~1500 chars
    text = "\n\n".join(f"Parágrafo {i}: " + "o sabiá canta na palmeira. " * 12
                       for i in range(20))
    if mode == "sync":
        chunks = list(chain.stream({"text": text}))
    else:
        chunks = [c async for c in chain.astream({"text": text})]
    out = "".join(chunks)
    parts = len(emu.requests) - 1
    assert parts >= 3
    assert out.startswith(f"> Texto longo: resumindo {parts} partes…\n")
    for i in range(1, parts + 1):
        assert f"> parte {i}/{parts} resumida\n" in out
    # the final answer streams after the progress, token by token
    final = emu.expected_text(_sent(emu)["messages"])
    assert out.endswith("\n\n" + final) and len(chunks) > parts + 3
    # the reduce step summarised exactly the partial summaries
    partials = [emu.expected_text(r.body["messages"]) for r in emu.requests[:-1]]
    reduce_text = _sent(emu)["messages"][-1]["content"]
    assert all(p in reduce_text for p in partials)


async def test_leaving_a_map_reduce_early_stops_the_remaining_parts():
    with MaritacaEmulator(reply_tokens=30, token_delay=0.02) as emu:
        chain = build_summarize_chain(emulator_model(emu), context_tokens=3_000)
        text = "\n\n".join("o sabiá canta na palmeira. " * 12 for _ in range(20))
        stream = chain.astream({"text": text})
        first = await anext(stream)
        assert first.startswith("> Texto longo")
        await stream.aclose()
        sent = len(emu.requests)
        assert sent <= 4  # at most MAP_CONCURRENCY parts had started
        for _ in range(100):
            if all(r.finished_at or r.client_disconnected for r in emu.requests):
                break
            await asyncio.sleep(0.01)
        assert all(r.client_disconnected for r in emu.requests)
        assert len(emu.requests) == sent


def test_configurable_fields_are_model_temperature_and_max_tokens_only(emu):
    chain = build_story_chain(emulator_model(emu))
    assert {spec.id for spec in chain.config_specs} == {"model", "temperature", "max_tokens"}
    model_spec = next(s for s in chain.config_specs if s.id == "model")
    assert {"sabia-4", "sabiazinho-4"} <= {m.value for m in model_spec.annotation}
    configured = chain.with_config(configurable={"model": "sabiazinho-4", "temperature": 0,
                                                 "max_tokens": 50})
    configured.invoke({"topic": "Brasil"})
    body = _sent(emu)
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("sabiazinho-4", 0, 50)


def test_a_model_outside_the_catalogue_is_refused_by_configurable(emu):
    chain = build_story_chain(emulator_model(emu))
    with pytest.raises(KeyError, match="gpt-4"):  # langchain-core's own error
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
])
def test_bad_input_names_the_field_before_any_request(emu, chain_name, value, field):
    chain = build_chains(emulator_model(emu))[chain_name]
    with pytest.raises(ValidationError, match=field):
        chain.invoke(value)
    assert emu.requests == []


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
        with pytest.raises(ValueError, match="not summarising"):
            list(chain.stream({"text": text}))
