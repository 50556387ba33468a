"""The direct streaming paths stand on langchain-core internals, checked once at import.

``maritaca._langchain_private`` and ``chains._lcel_private`` read the private members
the direct runs need; ``maritaca._model_run.DIRECT`` and ``chains._direct.DIRECT`` say
whether those are there and whether a probe run reports what langchain-core's reports.
These tests show the checks hold on the installed langchain-core (they fail if a release
changes what the direct paths rely on), that each check really catches a change, and
that with the direct paths off (langchain-core's own paths) every output is the same.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import emulator_model
from langchain_core.language_models import BaseChatModel
from test_direct_stream import _chain_run, _events, _log, _model_run, both_ways

from chains import _direct, _direct_probe, _lcel_private, build_story_chain
from maritaca import _langchain_private, _model_run_probe
from maritaca import _model_run as model_run
from maritaca.testing import MaritacaEmulator, Scenario


def _fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both direct paths off, as when a check fails at import."""
    monkeypatch.setattr(model_run, "DIRECT", False)
    monkeypatch.setattr(_direct, "DIRECT", False)


def test_the_installed_langchain_core_passes_every_check() -> None:
    assert _langchain_private.PRESENT and model_run.DIRECT
    assert _lcel_private.PRESENT and _direct.DIRECT


@pytest.mark.parametrize("member", ["_convert_input", "_should_stream",
                                    "_get_invocation_params", "_get_ls_params_with_defaults",
                                    "_serialized"])
def test_a_private_member_gone_turns_the_model_path_off(
        member: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in BaseChatModel.__mro__:  # gone from langchain-core, not just overridden
        if member in vars(cls):
            monkeypatch.delattr(cls, member)
    assert not _langchain_private._present()


def test_a_renamed_parameter_turns_the_model_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def renamed(self: Any, *, is_async: bool, **kwargs: Any) -> bool:
        return True

    monkeypatch.setattr(BaseChatModel, "_should_stream", renamed)
    assert not _langchain_private._present()


@pytest.mark.parametrize("tap", ["tap_output_iter", "tap_output_aiter"])
def test_a_streaming_handler_without_its_taps_turns_the_chain_path_off(
        tap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_core.tracers.log_stream import LogStreamCallbackHandler

    assert _lcel_private._present()
    for cls in LogStreamCallbackHandler.__mro__:  # gone from langchain-core's handler
        if tap in vars(cls):
            monkeypatch.delattr(cls, tap)
    assert not _lcel_private._present()


@pytest.mark.parametrize("member", ["_serialized", "_format_prompt_with_error_handling"])
def test_a_prompt_member_gone_turns_the_templates_own_run_off(
        member: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The direct path then invokes the template as before (LCEL's run of it)."""
    from langchain_core.prompts import BasePromptTemplate

    assert _lcel_private._prompts_present()
    for cls in BasePromptTemplate.__mro__:
        if member in vars(cls):
            monkeypatch.delattr(cls, member)
    assert not _lcel_private._prompts_present()


def test_the_streaming_handlers_gone_turn_the_chain_path_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import langchain_core.tracers.event_stream as event_stream

    monkeypatch.delattr(event_stream, "_AstreamEventsCallbackHandler")
    assert not _lcel_private._present()


def test_the_probes_catch_a_run_that_reports_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _model_run_probe.probe_matches(model_run._stream, model_run._astream)
    assert _direct_probe.probe_matches(_direct.DirectChain)
    # langchain-core's message id for the run's chunks, changed
    monkeypatch.setattr(model_run, "LC_ID_PREFIX", "run")
    assert not _model_run_probe.probe_matches(model_run._stream, model_run._astream)
    # the tag LCEL gives a sequence's steps, changed
    monkeypatch.setattr(_lcel_private, "step_tag", lambda step: f"step:{step}")
    assert not _direct_probe.probe_matches(_direct.DirectChain)


def test_the_fallback_is_langchain_cores_own_code(monkeypatch: pytest.MonkeyPatch) -> None:
    with MaritacaEmulator(reply_tokens=3) as emulator:
        model = emulator_model(emulator)
        chain = build_story_chain(model).bound
        assert model.stream("Olá").gi_code.co_qualname == "_stream"
        assert chain.stream({"topic": "x"}).gi_code.co_qualname == "DirectChain._direct_stream"
        _fall_back(monkeypatch)
        assert model.stream("Olá").gi_code.co_qualname == "BaseChatModel.stream"
        assert model.astream("Olá").ag_code.co_qualname == "BaseChatModel.astream"
        assert chain.stream({"topic": "x"}).gi_code.co_qualname.startswith("RunnableLambda.")
        assert chain.astream({"topic": "x"}).ag_code.co_qualname.startswith("RunnableLambda.")


@both_ways
@pytest.mark.parametrize("scenario", [None, Scenario.drop(after_chunks=3)],
                         ids=["ok", "broken-off"])
def test_without_the_direct_paths_chunks_and_callbacks_are_the_same(
        scenario: Scenario | None, sync: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model_run(True, sync, scenario)
    chain = _chain_run(build_story_chain, {"topic": "Brasil"}, True, sync, scenario)
    _fall_back(monkeypatch)
    assert _model_run(True, sync, scenario) == model
    assert _chain_run(build_story_chain, {"topic": "Brasil"}, True, sync, scenario) == chain


async def test_without_the_direct_paths_astream_events_and_log_are_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    events, log = await _events(build_story_chain, False), await _log(False)
    _fall_back(monkeypatch)
    assert await _events(build_story_chain, False) == events
    assert await _log(False) == log
