"""Prompts as data: every prompt file loads, fits its chain's input, and bad files say why."""

from __future__ import annotations

import typing

import pytest

from chains import CHAINS, PromptFileError
from chains._prompts import load_prompt, prompt_dir, template_variables


@pytest.mark.parametrize("name", list(CHAINS))
def test_every_prompt_matches_its_chain_input(name):
    prompt = load_prompt(name)
    fields = CHAINS[name].input_type.model_fields
    assert set(prompt.variables) <= set(fields), \
        f"prompts/{name}.yaml uses variables its chain's input does not have"
    required = {f for f, info in fields.items() if info.is_required()}
    assert required <= set(prompt.variables), f"prompts/{name}.yaml ignores a required field"
    assert set(prompt.template().input_variables) <= set(prompt.variables)
    for variable, options in prompt.choices.items():  # every option has its words
        assert set(options) == set(typing.get_args(fields[variable].annotation)), variable
    CHAINS[name].input_type.model_validate(prompt.example)


def test_every_prompt_file_has_a_chain():
    assert {p.name.removesuffix(".yaml") for p in prompt_dir().iterdir()
            if p.name.endswith(".yaml")} == set(CHAINS)


def test_chains_are_presented_in_portuguese():
    assert [spec.title for spec in CHAINS.values()] == \
        ["História", "Perguntas e respostas", "Resumo"]
    for spec in CHAINS.values():
        assert spec.description == load_prompt(spec.name).description
        assert "\n" not in spec.description and spec.description.endswith(".")


def test_prompts_are_portuguese_first_and_follow_the_input_language():
    for name in CHAINS:
        prompt = load_prompt(name)
        for messages in [prompt.messages, *(v.messages for v in prompt.variants.values())]:
            system = messages[0].content
            assert "Idioma: {language}" in system and '"auto"' in system, name


def test_budgets_fit_what_is_asked():
    story = CHAINS["story"].input_type
    budgets = [load_prompt("story").budget(story(topic="x", length=n))
               for n in ("curta", "média", "longa")]
    assert budgets == [300, 600, 1200]
    assert load_prompt("qa").budget(CHAINS["qa"].input_type(question="q")) == 400
    summary = CHAINS["summarize"].input_type
    assert load_prompt("summarize").budget(summary(text="t")) == 150
    assert load_prompt("summarize").budget(summary(text="t", length="longo",
                                                   format="tópicos")) == 750


GOOD = """\
title: T
description: d
example: {topic: x}
variables: [topic]
max_tokens: 100
messages:
  - role: user
    content: "Tema: {topic}"
"""


def _write(tmp_path, text: str, name: str = "p") -> None:
    (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")


@pytest.mark.parametrize(("text", "says"), [
    (GOOD + "temperature: 2\n", "temperature"),                      # unknown key
    (GOOD.replace("[topic]", "[]"), "['topic']"),                    # undeclared variable
    (GOOD.replace("[topic]", "[topic, style]"), "['style']"),        # declared, never used
    (GOOD.replace("role: user", "role: narrator"), "messages.0.role"),
    (GOOD.replace("description: d\n", ""), "description"),
    (GOOD.replace("max_tokens: 100", "max_tokens: 40000"), "max_tokens"),
    (GOOD + "choices: {size: {a: b}}\n", "['size']"),                # choice of no variable
    (GOOD + "choices: {topic: {a: {text: b, tokens: 3}}}\n", "choices.topic.a.tokens"),
    (GOOD + "variants: {map: {messages: [{role: user, content: '{x}'}]}}\n", "variants.map"),
    ("messages: [unclosed\n", "cannot read"),
])
def test_a_bad_prompt_file_names_the_file_and_the_key(tmp_path, text, says):
    _write(tmp_path, text)
    with pytest.raises(PromptFileError) as info:
        load_prompt("p", tmp_path)
    assert str(tmp_path / "p.yaml") in str(info.value)
    assert says in str(info.value)


def test_a_variant_the_chain_needs_but_the_file_lacks_is_named(tmp_path):
    _write(tmp_path, GOOD)
    with pytest.raises(PromptFileError, match=r"p\.yaml: no variants\.map"):
        load_prompt("p", tmp_path).template("map")


def test_a_missing_prompt_file_is_named(tmp_path):
    with pytest.raises(PromptFileError, match="absent.yaml"):
        load_prompt("absent", tmp_path)


def test_template_variables():
    assert template_variables("a {x} b {y} {{literal}}") == {"x", "y"}


def test_the_prompt_files_ship_inside_the_chains_package():
    # an installed wheel finds them through importlib.resources, as the source tree does
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert (root / "chains" / "prompts").resolve() == (root / "prompts").resolve()
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["tool"]["setuptools"]["package-data"]["chains"] == ["prompts/*.yaml"]
    assert {p.name for p in prompt_dir().iterdir()} >= {f"{n}.yaml" for n in CHAINS}
