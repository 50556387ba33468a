"""``/<chain>/stream`` and ``/stream_events`` answered by ``langserve_compat.stream_route``
send what LangServe's own handler sends, byte for byte (the run ids aside), for the
requests it answers and for the ones it hands to LangServe; and the run it starts is
configured as LangServe's would be."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from langserve.api_handler import _unpack_input, _update_config_with_defaults
from starlette.requests import Request

from chains import CHAINS, build_chains
from maritaca import ChatMaritaca
from maritaca.testing import MaritacaEmulator, Scenario
from maritaca_chains import create_app, langserve_compat
from maritaca_chains.langserve_compat.stream_route import _sse_events, defaults, unpacked
from maritaca_chains.settings import ServerSettings
from tests.conftest import emulator_model, loopback_transport

# what differs from one run to the next: run ids, and the emulator's completion ids
IDS = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                 rb"|chatcmpl-[0-9a-f]+")

# (path, body, emulator scenario or None): what clients send, good and bad
CASES: list[tuple[str, Any, Any]] = [
    ("/story/stream", {"input": {"topic": "Brasil"}}, None),
    ("/story/stream", {"input": {"topic": "Brasil"}, "config": {}, "kwargs": {}}, None),
    ("/qa/stream", {"input": {"question": "Qual é a capital do Brasil?"}}, None),
    ("/story/stream", {"input": {"topic": "Brasil"},
                       "config": {"configurable": {"temperature": 0.2}}}, None),
    ("/story/stream", {"input": {"topic": "Brasil"}, "config": {"tags": ["a"]}}, None),
    ("/story/stream", {"input": {"topico": "Brasil"}}, None),
    ("/story/stream", {"input": "Brasil"}, None),
    ("/story/stream", {"inputs": {"topic": "Brasil"}}, None),
    ("/story/stream", [1, 2], None),
    ("/story/stream", {"input": {"topic": "Brasil"}, "config": []}, None),
    ("/story/stream", {"input": {"topic": "Brasil"}}, Scenario.error_event(after_chunks=3)),
    ("/story/stream", {"input": {"topic": "Brasil"}}, Scenario.drop(after_chunks=2)),
    ("/story/stream_events", {"input": {"topic": "Brasil"}}, None),
    ("/story/stream_events", {"input": {"topic": "Brasil"},
                              "include_names": ["ChatMaritaca"]}, None),
    ("/story/stream_events", {"input": {"topic": "Brasil"},
                              "exclude_types": ["prompt", "parser"]}, None),
    ("/story/stream_events", {"input": {"topic": "Brasil"}, "include_tags": "não é lista"},
     None),
    ("/story/stream_events", {"input": {"topico": "Brasil"}}, None),
    ("/story/stream_events", {"input": {"topic": "Brasil"}},
     Scenario.error_event(after_chunks=3)),
    # a filter sent as null, and a key LangServe ignores: no filter either way
    ("/story/stream_events", {"input": {"topic": "Brasil"}, "exclude_tags": None}, None),
    ("/story/stream_events", {"input": {"topic": "Brasil"}, "kwargs": {}}, None),
]


def _app(emulator: MaritacaEmulator) -> FastAPI:
    return create_app(ServerSettings(_env_file=None, ui=False),  # type: ignore[call-arg]
                      model=emulator_model(emulator))


async def _answers(app: FastAPI, emulator: MaritacaEmulator) -> list[tuple[int, str, bytes]]:
    answers = []
    async with httpx.AsyncClient(transport=loopback_transport(app, raise_app_exceptions=False),
                                 base_url="http://testserver", timeout=30) as http:
        for path, body, scenario in CASES:
            if scenario is not None:
                emulator.enqueue(scenario)
            response = await http.post(path, json=body, headers={"user-agent": "teste/1.0"})
            answers.append((response.status_code, response.headers.get("content-type", ""),
                            IDS.sub(b"<id>", response.content)))
    return answers


async def test_the_answers_are_langserves_byte_for_byte(monkeypatch):
    with MaritacaEmulator(reply_tokens=8) as emulator:
        ours = await _answers(_app(emulator), emulator)
        emulator.reset()
        # the same app, with LangServe's own handlers left in place
        monkeypatch.setattr(langserve_compat, "add_stream_route", lambda *args: False)
        theirs = await _answers(_app(emulator), emulator)
    for case, mine, langserves in zip(CASES, ours, theirs, strict=True):
        assert mine == langserves, case[:2]
    statuses = [status for status, _, _ in ours]
    assert statuses.count(200) >= 10 and 422 in statuses  # both kinds were compared
    streamed = ours[0][2]
    assert streamed.startswith(b"event: metadata\r\ndata: {\"run_id\": \"<id>\"}\r\n\r\n")
    assert streamed.count(b"event: data") >= 8 and streamed.endswith(b"event: end\r\n\r\n")
    assert b"on_chat_model_stream" in ours[12][2]
    assert b"event: error" in ours[10][2] and b"event: error" in ours[17][2]


def _request(user_agent: str | None) -> Request:
    headers = [] if user_agent is None else [(b"user-agent", user_agent.encode())]
    return Request({"type": "http", "method": "POST", "path": "/story/stream",
                    "headers": headers, "query_string": b""})


@pytest.mark.parametrize("user_agent", ["teste/1.0", None])
@pytest.mark.parametrize("endpoint", ["stream", "stream_events"])
def test_the_run_is_configured_as_langserve_configures_it(user_agent, endpoint):
    hooked = {"callbacks": [object()]}  # what the per-request hook returns
    ours = defaults(dict(hooked), run_name="/story", user_agent=user_agent, endpoint=endpoint)
    theirs = _update_config_with_defaults("/story", dict(hooked),  # type: ignore[arg-type]
                                          _request(user_agent), endpoint=endpoint)
    assert ours.pop("run_id") != theirs.pop("run_id")  # type: ignore[typeddict-item]
    assert ours == theirs


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_the_input_is_unpacked_as_langserve_unpacks_it(name):
    model = ChatMaritaca(api_key="x", base_url="http://127.0.0.1:9")
    schema = build_chains(model)[name].input_schema
    required = {field: "Brasil" for field, info in schema.model_fields.items()
                if info.is_required()}
    validated = schema.model_validate(required)
    assert unpacked(validated) == _unpack_input(validated)
    assert unpacked(validated).items() >= required.items()


async def test_a_hang_up_ends_the_chains_stream_before_the_response_ends() -> None:
    """The server closes the events it sends when the client hangs up: the stream they
    come from (the chain's, in the routes) is closed right there, not later in a task
    the garbage collector starts."""
    closed: list[str] = []

    async def chain_stream() -> Any:
        try:
            yield "1"
            yield "2"
        finally:
            closed.append("chain")

    first = {"event": "metadata", "data": "{}"}
    sent = _sse_events(chain_stream, str.encode, first)
    assert [await anext(sent), await anext(sent)] == [first, b"1"]
    await sent.aclose()  # type: ignore[attr-defined]
    assert closed == ["chain"]


async def test_a_failing_stream_ends_with_langserves_error_event_and_raises() -> None:
    """What came before the failure, LangServe's generic error event (no detail of the
    failure), then the failure itself for the server to log; no ``end``."""
    async def chain_stream() -> Any:
        yield "1"
        raise RuntimeError("chave sk-secreta recusada")

    sent = _sse_events(chain_stream, str.encode)
    assert await anext(sent) == b"1"
    error = await anext(sent)
    assert error["event"] == "error" and "sk-secreta" not in error["data"]
    assert json.loads(error["data"]) == {"status_code": 500,
                                         "message": "Internal Server Error"}
    with pytest.raises(RuntimeError, match="recusada"):
        await anext(sent)


async def test_an_empty_stream_sends_only_end() -> None:
    async def chain_stream() -> Any:
        return
        yield  # an async generator that yields nothing

    sent = _sse_events(chain_stream, str.encode, {"event": "metadata", "data": "{}"})
    assert [event async for event in sent] == [{"event": "end"}]
