"""Chains are files: the built-ins are files, a copy is a chain, and a broken file says
which file, which key and what to do."""

from __future__ import annotations

import shutil

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from chains import (
    CHAINS,
    ChainFileError,
    JsonOutputError,
    build_chains,
    chain_specs,
    load_chain,
    load_prompt,
    read_chain_file,
)
from chains.registry import builtin_dir
from maritaca.testing import MaritacaEmulator
from tests.conftest import emulator_model

GOOD = """\
title: Tradução
description: Traduz um texto.
example: {text: Bom dia}
inputs:
  text: {type: text, label: Texto, max_length: 200}
  tone:
    type: choice
    default: neutro
    choices:
      neutro: {text: tom neutro, max_tokens: 0}
      formal: {text: tom formal, max_tokens: 40}
max_tokens: 100
messages:
  - role: system
    content: "Traduza com {tone}."
  - role: user
    content: "{text}"
"""


def _write(tmp_path, text: str, name: str = "traducao"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _specs(tmp_path, text: str):
    _write(tmp_path, text)
    return chain_specs([tmp_path])


def _problems(path) -> list[str]:
    with pytest.raises(ChainFileError) as info:
        chain_specs([path.parent])
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return [str(p) for p in info.value.problems]


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("change", "key", "says"), [
    # unknown key, top level and inside an input
    (lambda t: t + "temperature: 2\n", "temperature", "unknown key"),
    (lambda t: t.replace("label: Texto,", "lable: Texto,"), "inputs.text.lable", "unknown key"),
    # a variable no input declares
    (lambda t: t.replace('"{text}"', '"{texto}"'), "messages.1.content",
     "{texto} but no input declares it"),
    # an input no message uses
    (lambda t: t.replace("Traduza com {tone}.", "Traduza."), "inputs.tone",
     "no message uses {tone}"),
    # bad types
    (lambda t: t.replace("max_tokens: 100", "max_tokens: muitos"), "max_tokens", "integer"),
    (lambda t: t.replace("type: text,", "type: texto,"), "inputs.text.type", "fix the value"),
    (lambda t: t.replace("default: neutro", "default: 3"), "inputs.tone.default",
     "is not a choice"),
    (lambda t: t.replace("default: neutro", "default: casual"), "inputs.tone.default",
     "not one of the choices"),
    (lambda t: t.replace("max_length: 200", "max_length: 200, minimum: 1"),
     "inputs.text.minimum", "only number inputs"),
    # a choice without a budget where the others have one
    (lambda t: t.replace("formal: {text: tom formal, max_tokens: 40}", "formal: tom formal"),
     "inputs.tone.choices.formal", "budgets are per choice"),
    # missing key, bad role, an example that is not a valid input
    (lambda t: t.replace("description: Traduz um texto.\n", ""), "description", "missing"),
    (lambda t: t.replace("role: user", "role: narrator"), "messages.1.role", "fix the value"),
    (lambda t: t.replace("example: {text: Bom dia}", "example: {txt: Bom dia}"),
     "example.text", "not a valid input"),
    (lambda t: t + "main: tone\n", "main", "must be a text input"),
    (lambda t: t + "output: {json_schema: {type: objeto}}\n", "output.json_schema",
     "not a valid JSON Schema"),
    (lambda t: t + "strategy: {map_reduce: {field: tone, max_tokens: 100, "
                   "messages: [{role: user, content: '{text}'}]}}\n",
     "strategy.map_reduce.field", "not a text input"),
])
def test_each_error_names_the_file_the_key_and_what_to_do(tmp_path, change, key, says):
    path = _write(tmp_path, change(GOOD))
    problems = _problems(path)
    assert any(p.startswith(f"{key}: ") and says in p for p in problems), problems
    # "what to do": every message ends in an instruction
    assert all(":" in p.split(": ", 1)[1] for p in problems), problems


def test_unreadable_yaml_and_bad_names_are_named(tmp_path):
    path = _write(tmp_path, "messages: [unclosed\n")
    assert "not valid YAML" in _problems(path)[0]
    path.unlink()
    path = _write(tmp_path, GOOD, name="Tradução")
    assert "cannot name a chain" in _problems(path)[0]
    path.unlink()
    path = _write(tmp_path, GOOD, name="healthz")
    assert "one of the server's own routes" in _problems(path)[0]


def test_a_missing_directory_is_an_error(tmp_path):
    with pytest.raises(ChainFileError, match="no such directory"):
        chain_specs([tmp_path / "nope"])


# --------------------------------------------------------------------- built-ins
def test_the_builtins_are_files_and_nothing_else():
    import chains

    assert list(CHAINS) == ["story", "qa", "summarize", "chat"]
    for name, spec in CHAINS.items():
        assert spec.source.endswith(f"{name}.yaml") and len(spec.version) == 8
        assert spec.file is not None and spec.file.title == spec.title
    package = builtin_dir().parent if hasattr(builtin_dir(), "parent") else None
    modules = {p.name for p in package.iterdir()} if package is not None else set()
    assert not {"story.py", "qa.py", "summarize.py"} & modules
    assert chains.StoryInput is CHAINS["story"].input_type
    assert [spec.title for spec in CHAINS.values()] == \
        ["História", "Perguntas e respostas", "Resumo", "Conversa"]


def test_a_copy_of_story_yaml_under_another_name_is_a_complete_chain(tmp_path, emu):
    shutil.copy(builtin_dir() / "story.yaml", tmp_path / "conto.yaml")
    specs = chain_specs([tmp_path])
    assert specs["conto"].version == CHAINS["story"].version
    chain = build_chains(emulator_model(emu), specs=specs)["conto"]
    text = "".join(chain.stream({"topic": "Pantanal", "length": "média"}))
    body = emu.requests[-1].body
    assert text == emu.expected_text(body["messages"]) and body["max_tokens"] == 600
    assert "Tema: Pantanal" in body["messages"][-1]["content"]


def test_a_directory_file_replaces_a_builtin_and_says_so(tmp_path, caplog):
    _write(tmp_path, GOOD, name="story")
    with caplog.at_level("WARNING", logger="chains"):
        specs = chain_specs([tmp_path])
    assert specs["story"].title == "Tradução"
    assert "replaces the built-in chain" in caplog.text


def test_the_budgets_are_the_files(emu):
    story = CHAINS["story"].input_type
    from chains.chain_runtime import render_messages

    budgets = [render_messages("story", CHAINS["story"].file, story(topic="x", length=n),
                               story)[1]
               for n in ("curta", "média", "longa")]
    assert budgets == [300, 600, 1200]
    summary = CHAINS["summarize"]
    assert render_messages("summarize", summary.file, {"text": "t", "length": "longo",
                                                       "format": "tópicos"})[1] == 750


def test_prompts_are_portuguese_first_and_follow_the_input_language():
    for name in CHAINS:
        file = load_prompt(name)
        for _, messages in file._message_lists():
            system = messages[0].content
            if file.history == "thread":  # a conversation: no language input, it follows
                assert "português do\nBrasil (ou no idioma em que falarem" in system, name
                continue                  # the language it is spoken to in
            assert "Idioma: {language}" in system and '"auto"' in system, name


def test_the_chain_files_ship_inside_the_chains_package():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert (root / "chains" / "prompts").resolve() == (root / "prompts").resolve()
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["tool"]["setuptools"]["package-data"]["chains"] == ["prompts/*.yaml"]


# ------------------------------------------------------------------------ load_chain
def test_load_chain_by_path_by_name_and_from_the_environment(tmp_path, emu, monkeypatch):
    path = _write(tmp_path, GOOD)
    model = emulator_model(emu)
    by_path = load_chain(path, model)
    assert by_path.invoke({"text": "Olá", "tone": "formal"}) == emu.expected_text(
        emu.requests[-1].body["messages"])
    assert emu.requests[-1].body["max_tokens"] == 140
    monkeypatch.setenv("MARITACA_CHAINS_DIR", f"/nonexistent-is-fine-later:{tmp_path}"
                       .replace("/nonexistent-is-fine-later:", ""))
    assert load_chain("traducao", model).get_input_schema().model_json_schema()[
        "properties"]["text"]["maxLength"] == 200
    with pytest.raises(KeyError, match="no chain named 'nada'"):
        load_chain("nada", model)


def test_variants_are_picked_by_their_when(emu):
    chain = build_chains(emulator_model(emu))["qa"]
    chain.invoke({"question": "Qual?"})
    assert "conhecimento geral" in emu.requests[-1].body["messages"][0]["content"]
    chain.invoke({"question": "Qual?", "context": "Algo."})
    assert "<contexto>" in emu.requests[-1].body["messages"][0]["content"]


def test_typed_inputs_are_validated(tmp_path):
    text = GOOD.replace("inputs:\n", "inputs:\n  n: {type: integer, default: 2, minimum: 1, "
                                     "maximum: 5}\n  ok: {type: boolean, default: true}\n")
    text = text.replace("Traduza com {tone}.", "Traduza com {tone}, {n} vezes, {ok}.")
    _write(tmp_path, text)
    spec = chain_specs([tmp_path])["traducao"]
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        spec.input_type.model_validate({"text": "x", "n": 9})
    with pytest.raises(ValidationError):
        spec.input_type.model_validate({"text": "x" * 201})
    with pytest.raises(ValidationError):
        spec.input_type.model_validate({"text": "x", "extra": 1})
    from chains.chain_runtime import render_messages

    messages, _ = render_messages("traducao", spec.file, {"text": "x", "n": "3", "ok": False})
    assert messages[0] == ("system", "Traduza com tom neutro, 3 vezes, não.")


# ------------------------------------------------------------------------ JSON output
JSON_CHAIN = GOOD + """\
output:
  json_schema:
    type: object
    properties:
      traducao: {type: string}
      confianca: {type: number, minimum: 0, maximum: 1}
    required: [traducao, confianca]
    additionalProperties: false
"""


def test_a_json_chain_asks_for_its_schema_and_returns_a_validated_object(tmp_path):
    spec = _specs(tmp_path, JSON_CHAIN)["traducao"]
    assert spec.output_kind == "json"
    with MaritacaEmulator() as emu:
        chain = spec.build(emulator_model(emu))
        result = chain.invoke({"text": "Bom dia"})
        body = emu.requests[-1].body
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"]["required"] == \
            ["traducao", "confianca"]
        assert set(result) == {"traducao", "confianca"}
        assert isinstance(result["traducao"], str) and 0 <= result["confianca"] <= 1
        partials = list(chain.stream({"text": "Bom dia"}))
        assert partials[-1] == result or set(partials[-1]) == set(result)
        assert all(isinstance(p, dict) for p in partials)
        configured = chain.with_config(configurable={"max_tokens": 77})
        text = "".join(configured.text_chain.stream({"text": "Bom dia"}))
        assert set(__import__("json").loads(text)) == {"traducao", "confianca"}
        assert emu.requests[-1].body["max_tokens"] == 77


@pytest.mark.parametrize(("reply", "says"), [
    ('{"traducao": "Good morning"}', "confianca"),               # a required key missing
    ('{"traducao": "x", "confianca": 7}', "confianca"),           # out of range
    ("Good morning", "not JSON"),
])
def test_a_json_answer_that_breaks_the_schema_is_an_error(tmp_path, reply, says):
    spec = _specs(tmp_path, JSON_CHAIN)["traducao"]
    model = GenericFakeChatModel(messages=iter([AIMessage(reply)] * 3))
    chain = spec.build(model)
    with pytest.raises(JsonOutputError, match=says):
        chain.invoke({"text": "Bom dia"})
    with pytest.raises(JsonOutputError, match=says):
        "".join(chain.text_chain.stream({"text": "Bom dia"}))


def test_read_chain_file_gives_the_version_as_a_content_hash(tmp_path):
    first = read_chain_file(_write(tmp_path, GOOD))
    second = read_chain_file(_write(tmp_path, GOOD + "# a comment\n"))
    assert first.version != second.version and len(first.version) == 8


def test_the_readmes_complete_example_is_a_valid_chain(tmp_path, emu):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("**The format**, complete", 1)[1].split("```yaml\n", 1)[1]
    path = tmp_path / "ficha.yaml"
    path.write_text(block.split("```", 1)[0], encoding="utf-8")
    spec = chain_specs([tmp_path])["ficha"]
    assert spec.output_kind == "json" and spec.main_field == "text"
    assert spec.file is not None and spec.file.strategy is not None
    result = spec.build(emulator_model(emu)).invoke({"text": "O sabiá canta.",
                                                     "detail": "completo"})
    assert set(result) >= {"assunto", "tom", "palavras_chave"}
    # a map-reduce answer is no longer than what it reads: 150 tokens at least
    assert emu.requests[-1].body["max_tokens"] == 150
