"""A chain served only from a directory gets every face: LangServe's routes and
playground, /text, /ws, resumable runs, the UI's generated form, the landing page,
/healthz (with its version), the run log and metrics."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from websockets.asyncio.client import connect

from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.faces import END, chat_fn
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model

pytestmark = pytest.mark.timeout(120)

TRADUCAO = """\
title: Tradução
description: Traduz um texto para o idioma pedido.
example: {texto: Bom dia}
main: texto
inputs:
  destino:
    type: choice
    label: Idioma de destino
    default: inglês
    choices:
      inglês: {text: o inglês, max_tokens: 0}
      espanhol: {text: o espanhol, max_tokens: 20}
  texto:
    type: text
    label: Texto a traduzir
    placeholder: "ex.: Bom dia"
    max_length: 300
    lines: 3
  vezes: {type: integer, label: Quantas versões, default: 1, minimum: 1, maximum: 3}
max_tokens: 120
messages:
  - {role: system, content: "Traduza para {destino}; dê {vezes} versões."}
  - {role: user, content: "{texto}"}
"""

FICHA = """\
title: Ficha
description: Extrai uma ficha do texto.
example: {texto: "O sabiá canta."}
inputs:
  texto: {type: text, max_length: 1000}
max_tokens: 200
messages:
  - {role: user, content: "Extraia a ficha de: {texto}"}
output:
  json_schema:
    type: object
    properties:
      assunto: {type: string}
      palavras: {type: integer, minimum: 0}
    required: [assunto, palavras]
    additionalProperties: false
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chains")
    (folder / "traducao.yaml").write_text(TRADUCAO, encoding="utf-8")
    (folder / "ficha.yaml").write_text(FICHA, encoding="utf-8")
    with MaritacaEmulator(reply_tokens=10) as emu:
        settings = ServerSettings(_env_file=None, MARITACA_CHAINS_DIR=str(folder),  # type: ignore[call-arg]
                                  MARITACA_CHAINS_TOKEN_BUDGET="1000000/day")
        app = create_app(settings, model=emulator_model(emu))
        with RunningServer(app) as server:
            yield emu, server, app


def http_of(served) -> httpx.Client:
    return httpx.Client(base_url=served[1].url, timeout=20)


def last(emu: MaritacaEmulator) -> dict:
    return emu.requests[-1].body


def test_langserve_routes_and_playground(served):
    emu = served[0]
    with http_of(served) as http:
        answer = http.post("/traducao/invoke", json={"input": {"texto": "Olá",
                                                               "destino": "espanhol"}})
        assert answer.status_code == 200
        assert answer.json()["output"] == emu.expected_text(last(emu)["messages"])
        assert last(emu)["max_tokens"] == 140
        assert "Traduza para o espanhol; dê 1 versões." in json.dumps(last(emu),
                                                                      ensure_ascii=False)
        with http.stream("POST", "/traducao/stream", json={"input": {"texto": "Olá"}}) as r:
            assert "event: end" in r.read().decode()
        assert http.get("/traducao/playground/").status_code == 200
        schema = http.get("/traducao/input_schema").json()
        assert schema["properties"]["texto"]["maxLength"] == 300
        refused = http.post("/traducao/invoke", json={"input": {"texto": "x", "vezes": 9}})
        assert refused.status_code == 422 and "vezes" in refused.text


def test_text_websocket_and_runs(served):
    emu = served[0]
    with http_of(served) as http:
        text = http.post("/traducao/text", json={"texto": "Olá, mundo"})
        assert text.status_code == 200, text.text
        assert text.text == emu.expected_text(last(emu)["messages"])
        assert last(emu)["messages"][-1]["content"] == "Olá, mundo"
        started = http.post("/traducao/runs", json={"input": {"texto": "Bom dia"}})
        assert started.status_code == 201
        with http.stream("GET", started.json()["stream_url"]) as response:
            assert "event: end" in response.read().decode()

    async def ws() -> list[str]:
        frames = []
        async with connect(served[1].url.replace("http://", "ws://") + "/traducao/ws") as sock:
            await sock.send("Boa noite")
            async with asyncio.timeout(15):
                while (frame := await sock.recv()) != END:
                    frames.append(frame)
        return frames

    frames = asyncio.run(ws())
    assert "".join(frames) == emu.expected_text(last(emu)["messages"])
    assert last(emu)["messages"][-1]["content"] == "Boa noite"


def test_json_chain_streams_objects_on_langserve_and_text_elsewhere(served):
    with http_of(served) as http:
        result = http.post("/ficha/invoke", json={"input": {"texto": "O sabiá canta."}}).json()
        assert set(result["output"]) == {"assunto", "palavras"}
        with http.stream("POST", "/ficha/stream", json={"input": {"texto": "x"}}) as r:
            body = r.read().decode()
        data = [json.loads(line[6:]) for line in body.splitlines()
                if line.startswith("data: ") and line[6:].startswith("{")]
        assert data and all(isinstance(d, dict) for d in data)
        assert set(data[-1]) == {"assunto", "palavras"}
        text = http.post("/ficha/text", json={"texto": "x"})
        assert set(json.loads(text.text)) == {"assunto", "palavras"}


def test_the_ui_has_a_generated_form(served):
    app = served[2]
    with http_of(served) as http:
        config = http.get("/ui/config").json()
    components = {c.get("props", {}).get("elem_id"): c for c in config["components"]}
    assert components["tab-traducao"]["props"]["label"] == "Tradução"
    assert components["traducao-texto"]["props"]["label"] == "Texto a traduzir"
    assert components["traducao-texto"]["props"]["placeholder"] == "ex.: Bom dia"
    assert components["traducao-destino"]["type"] == "radio"
    assert components["traducao-vezes"]["type"] == "number"

    async def ui() -> list:
        return [u async for u in chat_fn(app.state.chains)(
            "traducao", {"texto": "Olá", "destino": "inglês", "vezes": 2})]

    updates = asyncio.run(ui())
    assert updates[-1].done and not updates[-1].error and updates[-1].answer
    assert "dê 2 versões" in json.dumps(last(served[0]), ensure_ascii=False)
    blank = asyncio.run(chat_fn(app.state.chains)("traducao", {"texto": " "}).__anext__())
    assert blank.error == "Preencha o campo «Texto a traduzir» antes de enviar."


def test_landing_page_healthz_and_metrics(served):
    with http_of(served) as http:
        page = http.get("/").text
        health = http.get("/healthz").json()
        metrics = http.get("/metrics").text
    assert 'href="/traducao/playground/"' in page and "Tradução" in page
    chains = {c["name"]: c for c in health["chains"]}
    assert set(chains) == {"story", "qa", "summarize", "chat", "traducao", "ficha"}
    assert chains["traducao"]["version"] == served[2].state.chain_specs["traducao"].version
    assert chains["ficha"]["output"] == "json"
    assert 'chain="traducao"' in metrics


def test_the_run_log_line_names_the_chains_version(served, caplog):
    with caplog.at_level(logging.INFO, logger="maritaca_chains.runs"), http_of(served) as http:
        http.post("/traducao/invoke", json={"input": {"texto": "Olá"}})
    lines = [json.loads(r.getMessage()) for r in caplog.records
             if r.name == "maritaca_chains.runs" and r.getMessage().startswith("{")]
    assert lines and lines[-1]["chain"] == "traducao"
    assert lines[-1]["chain_version"] == served[2].state.chain_specs["traducao"].version


def test_a_broken_file_stops_the_app_naming_it(tmp_path, emu):
    from chains import ChainFileError

    (tmp_path / "quebrada.yaml").write_text(TRADUCAO.replace("{texto}", "{text}"),
                                            encoding="utf-8")
    settings = ServerSettings(_env_file=None, MARITACA_CHAINS_DIR=str(tmp_path))  # type: ignore[call-arg]
    with pytest.raises(ChainFileError, match="quebrada.yaml: messages.1.content"):
        create_app(settings, model=emulator_model(emu))


def test_the_openai_face_serves_it_too(served):
    emu = served[0]
    with http_of(served) as http:
        models = [m["id"] for m in http.get("/v1/models").json()["data"]]
        assert "traducao" in models and "ficha" in models
        answer = http.post("/v1/chat/completions", json={
            "model": "traducao", "messages": [{"role": "user", "content": "Boa tarde"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == emu.expected_text(
            last(emu)["messages"])
        assert last(emu)["messages"][-1]["content"] == "Boa tarde"
        assert last(emu)["max_tokens"] == 120  # the file's budget
