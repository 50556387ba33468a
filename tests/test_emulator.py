"""The Maritaca API emulator (maritaca.testing), driven with raw httpx."""

from __future__ import annotations

import enum
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import httpx
import jsonschema
import pydantic
import pytest

import maritaca.testing as testing
from maritaca.models import MODELS, catalogue_names
from maritaca.testing import (
    MaritacaEmulator,
    RecordedRequest,
    Scenario,
    closed_port_url,
    terminate,
)

pytest_plugins = ["pytester"]

USER = [{"role": "user", "content": "Qual é a capital do Brasil?"}]
HTTP = httpx.Client(timeout=10)  # one client: building an SSL context per call costs ~20 ms


@pytest.fixture(scope="module", autouse=True)
def _close_http():
    yield
    HTTP.close()


@pytest.fixture
def emu():
    with MaritacaEmulator() as e:
        yield e


def _auth(emu: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {emu.api_key}"}


def _post(emu: Any, **body: Any) -> httpx.Response:
    body = {"model": "sabia-4", "messages": USER, **body}
    return HTTP.post(f"{emu.base_url}/chat/completions", json=body, headers=_auth(emu))


def _events(emu: Any, **body: Any) -> list[Any]:
    """Stream a request; return parsed data payloads ("[DONE]" kept as the string)."""
    body = {"model": "sabia-4", "messages": USER, "stream": True, **body}
    out: list[Any] = []
    with HTTP.stream("POST", f"{emu.base_url}/chat/completions", json=body,
                     headers=_auth(emu)) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def _content(events: list[Any]) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if isinstance(e, dict) and e.get("choices"))


def test_public_names() -> None:
    assert set(testing.__all__) == {"MaritacaEmulator", "RecordedRequest", "Scenario",
                                    "SubprocessEmulator", "closed_port_url", "terminate"}


def test_import_loads_neither_langchain_nor_the_chat_model() -> None:
    code = ("import sys, maritaca.testing, maritaca.testing.pytest_plugin; "
            "loaded = [m for m in sys.modules if m.startswith(('langchain', 'maritaca.'))]; "
            "print(sorted(m for m in loaded if not m.startswith('maritaca.testing')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['maritaca._local_process', 'maritaca.models']"  # no langchain


def test_the_child_process_runs_without_langchain(tmp_path: Path) -> None:
    imports = tmp_path / "importtime.txt"
    with imports.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "maritaca.testing", "--port", "0"],
            stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[1]  # "READY <url>": every import is done
        assert httpx.get(f"{url}/models", headers={"Authorization": "Bearer test-key"}
                         ).status_code == 200
    finally:
        terminate(proc)
    loaded = imports.read_text()
    assert "maritaca.testing._app" in loaded and "maritaca.models" in loaded
    assert "langchain" not in loaded and "maritaca.chat_model" not in loaded


# --- the happy path -----------------------------------------------------------------------


def test_stream_text_usage_and_done(emu: MaritacaEmulator) -> None:
    events = _events(emu, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {"sabia-4-2026-01-06"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert all(c["usage"] is None for c in chunks[:-1])
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["completion_tokens"] == 40 == len(chunks) - 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + 40
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    text = _content(chunks)
    assert text == emu.expected_text(USER) and len(text.split()) == 40
    rec = emu.requests[0]
    assert (rec.status, rec.scenario, rec.chunks_sent) == (200, "ok", 40)
    assert rec.body is not None and rec.body["messages"] == USER


def test_first_delta_alternates_and_no_usage_by_default(emu: MaritacaEmulator) -> None:
    first, second = _events(emu), _events(emu)
    assert first[0]["choices"][0]["delta"]["content"] == ""
    assert second[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert "usage" not in second[1]
    assert _content(first) == _content(second)


def test_non_streaming_n_choices_and_cached_tokens(emu: MaritacaEmulator) -> None:
    data = _post(emu, n=2).json()
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert data["choices"][0]["message"] == {"role": "assistant",
                                             "content": emu.expected_text(USER)}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    longer = [*USER, {"role": "assistant", "content": "Brasília."},
              {"role": "user", "content": "E a do Peru?"}]
    usage = _post(emu, messages=longer).json()["usage"]
    assert 0 < usage["prompt_tokens_details"]["cached_tokens"] < usage["prompt_tokens"]


def test_max_tokens_stop_fixed_reply_and_dated_model() -> None:
    with MaritacaEmulator(reply="Olá, mundo! Tudo bem? Até logo.", api_key=None) as emu:
        assert emu.expected_text(USER) == "Olá, mundo! Tudo bem? Até logo."
        events = _events(emu, max_tokens=2, model="sabiazinho-4-2026-01-06")
        assert _content(events) == "Olá, mundo!"
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        assert events[0]["model"] == "sabiazinho-4-2026-01-06"
        data = _post(emu, stop=["Tudo"]).json()
        assert data["choices"][0]["message"]["content"] == "Olá, mundo! "
        assert data["choices"][0]["finish_reason"] == "stop"


def test_limits_come_from_the_catalogue(emu: MaritacaEmulator) -> None:
    limit = MODELS["sabiazinho-4"].context_length
    just_over = [{"role": "user", "content": "palavra " * (limit - 2)}]  # +3 per message
    r = _post(emu, model="sabiazinho-4", messages=just_over)
    assert r.status_code == 400 and f"maximum context length is {limit} tokens" in r.text
    assert emu.requests[-1].scenario == "context_too_long"
    fits = [{"role": "user", "content": "palavra " * (limit - 3)}]
    assert _post(emu, model="sabiazinho-4", messages=fits).status_code == 200
    cap = MODELS["sabia-4"].max_output_tokens
    emu.enqueue(Scenario.ok(reply_tokens=cap + 1))
    data = _post(emu, max_tokens=cap + 100).json()  # clamped to what the model can write
    assert data["usage"]["completion_tokens"] == cap
    assert data["choices"][0]["finish_reason"] == "length"


def test_ok_scenario_and_fixed_first_delta() -> None:
    with MaritacaEmulator(first_delta_content=None, reply_tokens=3) as emu:
        emu.enqueue(Scenario.ok(reply="Só isso."), Scenario.ok(reply_tokens=5))
        assert _post(emu).json()["choices"][0]["message"]["content"] == "Só isso."
        assert _post(emu).json()["usage"]["completion_tokens"] == 5
        for _ in range(2):
            events = _events(emu)
            assert events[0]["choices"][0]["delta"]["content"] is None
            assert _content(events) == emu.expected_text(USER)


def test_records_are_bounded_and_reset() -> None:
    with MaritacaEmulator(max_records=2) as emu:
        for _ in range(3):
            _post(emu)
        assert len(emu.requests) == 2
        emu.enqueue(Scenario.server_error())
        emu.reset()
        assert emu.requests == [] and _post(emu).status_code == 200


def test_models_and_unknown_routes(emu: MaritacaEmulator) -> None:
    r = httpx.get(f"{emu.base_url}/models", headers=_auth(emu))
    assert [m["id"] for m in r.json()["data"]] == catalogue_names()
    assert "sabiazinho-4-br-sp" in catalogue_names()
    r = httpx.get(f"{emu.base_url}/nope")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    assert httpx.get(f"{emu.base_url}/chat/completions").status_code == 405


# --- structured output --------------------------------------------------------------------


class Cor(enum.Enum):
    AZUL = "azul"
    VERDE = "verde"


class Endereco(pydantic.BaseModel):
    rua: str
    numero: int = pydantic.Field(ge=1, le=9)
    cep: str | None = None


class Pessoa(pydantic.BaseModel):
    nome: str = pydantic.Field(min_length=3, max_length=20)
    idade: int = pydantic.Field(gt=150)
    altura: float = pydantic.Field(gt=0, lt=2.5)
    cor: Cor
    humor: Literal["feliz", "triste"]
    ativo: bool
    enderecos: list[Endereco] = pydantic.Field(min_length=2)
    principal: Endereco
    apelido: str | None = None


PESSOA = Pessoa.model_json_schema()
WEATHER = {"type": "object", "properties": {"cidade": {"type": "string"}}, "required": ["cidade"]}
TOOLS = [{"type": "function", "function": {"name": "clima", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "cadastrar", "parameters": PESSOA}}]


@pytest.mark.parametrize("schema", [
    PESSOA,
    {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 3, "uniqueItems": True},
    {"type": "object", "properties": {"a": {"anyOf": [{"type": "null"}, {"type": "number",
                                                                         "multipleOf": 0.5}]},
                                      "b": {"allOf": [{"$ref": "#/$defs/X"}]},
                                      "c": {"type": ["null", "string"], "format": "date"}},
     "required": ["a", "b", "c"], "additionalProperties": False,
     "$defs": {"X": {"type": "object", "properties": {"y": {"const": "ç"}}, "required": ["y"]}}},
    {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMaximum": 0,
                                            "multipleOf": 7}}, "required": ["n"]},
    {"$ref": "#/definitions/Node", "definitions": {"Node": {
        "type": "object", "properties": {"filhos": {"type": "array",
                                                    "items": {"$ref": "#/definitions/Node"}}},
        "required": ["filhos"]}}},
])
def test_structured_replies_are_valid(emu: MaritacaEmulator, schema: dict[str, Any]) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "doc", "schema": schema}}
    content = _post(emu, response_format=fmt).json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), schema)


def test_forced_tool_call_streams_valid_arguments(emu: MaritacaEmulator) -> None:
    choice = {"type": "function", "function": {"name": "cadastrar"}}
    events = _events(emu, tools=TOOLS, tool_choice=choice)
    first = events[0]["choices"][0]["delta"]
    header = first["tool_calls"][0]
    assert first["role"] == "assistant" and first["content"] is None
    assert header["id"].startswith("call_") and header["type"] == "function"
    assert header["function"] == {"name": "cadastrar", "arguments": ""}
    fragments = [e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                 for e in events[1:-2]]
    assert 3 <= len(fragments) <= 6
    jsonschema.validate(json.loads("".join(fragments)), PESSOA)
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert events[-1] == "[DONE]"


def test_tool_choice_required_auto_and_non_streaming(emu: MaritacaEmulator) -> None:
    message = _post(emu, tools=TOOLS, tool_choice="required").json()["choices"][0]
    call = message["message"]["tool_calls"][0]
    assert message["finish_reason"] == "tool_calls" and message["message"]["content"] is None
    assert call["function"]["name"] == "clima"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER)
    for choice in ("auto", "none", None):
        answer = _post(emu, tools=TOOLS, tool_choice=choice).json()["choices"][0]["message"]
        assert answer["content"] == emu.expected_text(USER) and "tool_calls" not in answer
    bad = _post(emu, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "x"}})
    assert bad.status_code == 400 and "x" in bad.json()["detail"]


def test_response_format(emu: MaritacaEmulator) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "Pessoa", "schema": PESSOA}}
    events = _events(emu, response_format=fmt)
    assert len(events) >= 3 + 3
    jsonschema.validate(json.loads(_content(events)), PESSOA)
    data = _post(emu, response_format={"type": "json_object"}).json()
    assert json.loads(data["choices"][0]["message"]["content"]) == {
        "resposta": emu.expected_text(USER)}


# --- errors -------------------------------------------------------------------------------


def test_auth() -> None:
    with MaritacaEmulator(api_key="segredo") as emu:
        url = f"{emu.base_url}/chat/completions"
        body = {"model": "sabia-4", "messages": USER}
        assert httpx.post(url, json=body).status_code == 401
        wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer outro"})
        assert wrong.status_code == 401 and wrong.json() == {"detail": "Invalid API key"}
        assert httpx.post(url, json=body, headers={"Authorization": "Key segredo"}).is_success
        assert [r.scenario for r in emu.requests] == ["unauthorized", "unauthorized", "ok"]
        assert "segredo" not in repr(emu.requests) and "outro" not in repr(emu.requests)
        assert {r.headers.get("authorization") for r in emu.requests} == {None, "<redacted>"}
    with MaritacaEmulator(api_key=None) as emu:
        assert httpx.post(f"{emu.base_url}/chat/completions", json=body).is_success


@pytest.mark.parametrize(("body", "status", "word"), [
    ({"messages": USER}, 422, "model"),
    ({"model": "sabia-4", "messages": []}, 422, "messages"),
    ({"model": "sabia-4", "messages": [{"role": "robot", "content": "x"}]}, 422, "role"),
    ({"model": "sabia-4", "messages": [{"role": "tool", "content": "x"}]}, 422, "tool_call_id"),
    ({"model": "sabia-4", "messages": USER, "n": 2, "stream": True}, 400, "n>1"),
])
def test_validation(emu: MaritacaEmulator, body: dict[str, Any], status: int, word: str) -> None:
    r = httpx.post(f"{emu.base_url}/chat/completions", json=body, headers=_auth(emu))
    assert r.status_code == status and word in r.json()["detail"]


@pytest.mark.parametrize(("scenario", "status", "body", "retry_after"), [
    (Scenario.rate_limit(retry_after=1.5), 429, "detail", "1.5"),
    (Scenario.rate_limit(retry_after="Wed, 21 Oct 2026 07:28:00 GMT"), 429, "detail",
     "Wed, 21 Oct 2026 07:28:00 GMT"),
    (Scenario.rate_limit(), 429, "detail", None),
    (Scenario.server_error(), 500, "message", None),
    (Scenario.server_error(503), 503, "message", None),
    (Scenario.unauthorized(), 401, "detail", None),
    (Scenario.bad_request("temperature: fora do intervalo", status=422), 422, "detail", None),
    (Scenario.context_too_long(), 400, "detail", None),
    (Scenario.http_error(403, {"detail": "Forbidden"}, retry_after=3), 403, "detail", "3"),
])
def test_error_scenarios(emu: MaritacaEmulator, scenario: Scenario, status: int, body: str,
                         retry_after: str | None) -> None:
    emu.enqueue(scenario)
    r = _post(emu, stream=True)
    assert r.status_code == status and set(r.json()) == {body}
    assert r.headers.get("retry-after") == retry_after
    if scenario.name == "context_too_long":
        assert "context length" in r.json()["detail"]
    if scenario.name == "rate_limit":
        assert r.json()["detail"].startswith("Rate limit exceeded:")
    assert _post(emu).status_code == 200  # one request only, then back to normal
    assert [rec.scenario for rec in emu.requests] == [scenario.name, "ok"]


def test_drop_breaks_the_stream(emu: MaritacaEmulator) -> None:
    emu.enqueue(Scenario.drop(after_chunks=3), Scenario.drop())
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):  # noqa: PT012
        with httpx.stream("POST", f"{emu.base_url}/chat/completions", headers=_auth(emu),
                          json={"model": "sabia-4", "messages": USER, "stream": True}) as r:
            lines.extend(line for line in r.iter_lines() if line)
    assert len(lines) == 4 and "finish_reason\":null" in lines[-1]  # role + 3 tokens
    with pytest.raises(httpx.RemoteProtocolError):
        _post(emu)
    first, second = emu.requests
    assert (first.scenario, first.chunks_sent, first.status) == ("drop", 3, 200)
    assert (second.status, second.client_disconnected) == (0, False)


def test_error_event(emu: MaritacaEmulator) -> None:
    emu.enqueue(Scenario.error_event(after_chunks=2, message="falhou"))
    events = _events(emu)
    assert events[-1] == {"error": {"message": "falhou", "type": "server_error", "code": 500}}
    assert len(events) == 4 and "[DONE]" not in events
    emu.enqueue(Scenario.error_event(message="falhou"))
    assert _post(emu).json() == {"message": "falhou"}


def test_connection_refused() -> None:
    url = closed_port_url()
    assert url == closed_port_url()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models")


# --- timing and disconnects ---------------------------------------------------------------


def test_client_disconnect_is_recorded_promptly() -> None:
    with MaritacaEmulator(token_delay=0.05, reply_tokens=200) as emu:
        body = {"model": "sabia-4", "messages": USER, "stream": True}
        with httpx.Client() as client:
            with client.stream("POST", f"{emu.base_url}/chat/completions", json=body,
                               headers=_auth(emu)) as r:
                seen = 0
                for line in r.iter_lines():
                    seen += line.startswith("data: ")
                    if seen == 4:  # role chunk + 3 tokens
                        break
                closed_at = time.monotonic()
            rec = emu.requests[0]
            deadline = closed_at + 0.2
            while not rec.client_disconnected and time.monotonic() < deadline:
                time.sleep(0.002)
        assert rec.client_disconnected and rec.disconnected_at is not None
        assert rec.disconnected_at - closed_at < 0.1
        sent = rec.chunks_sent
        assert 3 <= sent <= 8
        time.sleep(0.15)
        assert rec.chunks_sent == sent and rec.finished_at is not None


def test_pacing_and_slow_first_token() -> None:
    with MaritacaEmulator(token_delay=0.02, reply_tokens=10) as emu:
        start = time.monotonic()
        _events(emu)
        assert 0.17 < time.monotonic() - start < 1.0
        emu.enqueue(Scenario.slow_first_token(0.3), Scenario.token_delay(0.0))
        with httpx.stream("POST", f"{emu.base_url}/chat/completions", headers=_auth(emu),
                          json={"model": "sabia-4", "messages": USER, "stream": True}) as r:
            start = time.monotonic()
            next(r.iter_lines())
            assert time.monotonic() - start > 0.28
        start = time.monotonic()
        _events(emu)
        assert time.monotonic() - start < 0.15


def test_stop_aborts_open_streams() -> None:
    emu = MaritacaEmulator(token_delay=1.0)
    emu.start()
    body = {"model": "sabia-4", "messages": USER, "stream": True}
    with httpx.stream("POST", f"{emu.base_url}/chat/completions", json=body,
                      headers=_auth(emu)) as r:
        lines = r.iter_lines()
        next(lines)
        start = time.monotonic()
        emu.stop()
        assert time.monotonic() - start < 1.0
        with pytest.raises(httpx.RemoteProtocolError):
            list(lines)


def test_fault_rate_is_a_seeded_mix() -> None:
    def run() -> list[str]:
        with MaritacaEmulator(fault_rate=0.5, fault_seed=7, faults=(
                "rate_limit", "server_error", "error_event", "drop",
                Scenario.slow_first_token(0.01))) as emu:
            for _ in range(30):
                try:
                    _post(emu)
                except httpx.RemoteProtocolError:
                    pass
            return [r.scenario for r in emu.requests]

    names = run()
    assert names == run()
    assert 5 < names.count("ok") < 25
    assert {"rate_limit", "server_error", "drop"} <= set(names)


# --- ways to run it -----------------------------------------------------------------------


async def test_async_context_manager() -> None:
    async with MaritacaEmulator() as emu, httpx.AsyncClient() as client:
        r = await client.post(f"{emu.base_url}/chat/completions", headers=_auth(emu),
                              json={"model": "sabia-4", "messages": USER})
        assert r.json()["choices"][0]["message"]["content"] == emu.expected_text(USER)


def test_subprocess_mode() -> None:
    with MaritacaEmulator.subprocess(reply_tokens=5, api_key="k") as emu:
        assert emu.pid is not None
        cmdline = Path(f"/proc/{emu.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-m", b"maritaca.testing"]  # the command users run
        emu.enqueue(Scenario.rate_limit(retry_after=2))
        assert _post(emu).status_code == 429
        events = _events(emu)
        assert _content(events) == emu.expected_text(USER) and len(events) == 5 + 3
        recs = emu.requests
        assert all(isinstance(r, RecordedRequest) for r in recs)
        assert [(r.scenario, r.status, r.chunks_sent) for r in recs] == [
            ("rate_limit", 429, 0), ("ok", 200, 5)]
        assert recs[1].headers["authorization"] == "<redacted>"
        emu.reset()
        assert emu.requests == []


def test_pytest_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest('pytest_plugins = ["maritaca.testing.pytest_plugin"]')
    pytester.makepyfile("""
        import httpx, pytest

        @pytest.mark.maritaca_emulator(reply="oi", api_key=None)
        def test_it(maritaca_emulator):
            url = maritaca_emulator.base_url + "/chat/completions"
            r = httpx.post(url, json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
            assert r.json()["choices"][0]["message"]["content"] == "oi"
    """)
    pytester.runpytest_inprocess("--strict-markers", "-p", "no:cacheprovider").assert_outcomes(
        passed=1)
