"""Prompts as data: every prompt file loads, fits its chain's input, and bad files say why."""

from __future__ import annotations

import pytest

from chains import CHAINS
from chains._prompts import PROMPTS_DIR, PromptFileError, load_prompt, template_variables


@pytest.mark.parametrize("name", list(CHAINS))
def test_every_prompt_matches_its_chain_input(name):
    prompt = load_prompt(name)
    fields = set(CHAINS[name].input_type.model_fields)
    assert set(prompt.variables) <= fields, \
        f"prompts/{name}.yaml uses variables its chain's input does not have"
    required = {f for f, info in CHAINS[name].input_type.model_fields.items()
                if info.is_required()}
    assert required <= set(prompt.variables), f"prompts/{name}.yaml ignores a required field"
    assert set(prompt.template().input_variables) == set(prompt.variables)


def test_every_prompt_file_has_a_chain():
    assert {p.stem for p in PROMPTS_DIR.glob("*.yaml")} == set(CHAINS)


def test_prompts_are_portuguese_first_and_follow_the_input_language():
    for name in CHAINS:
        system = load_prompt(name).messages[0].content
        assert "Idioma: {language}" in system and '"auto"' in system, name


GOOD = """\
description: d
variables: [topic]
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
    ("messages: [unclosed\n", "cannot read"),
])
def test_a_bad_prompt_file_names_the_file_and_the_key(tmp_path, text, says):
    _write(tmp_path, text)
    with pytest.raises(PromptFileError) as info:
        load_prompt("p", tmp_path)
    assert str(tmp_path / "p.yaml") in str(info.value)
    assert says in str(info.value)


def test_a_missing_prompt_file_is_named(tmp_path):
    with pytest.raises(PromptFileError, match="absent.yaml"):
        load_prompt("absent", tmp_path)


def test_template_variables():
    assert template_variables("a {x} b {y} {{literal}}") == {"x", "y"}
