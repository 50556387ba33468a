"""The pages that run no model (``/``, ``/healthz``, ``/docs``, ``/redoc``), and the model
names every face offers being the ones that answer."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time

import httpx
import pytest

from chains import CHAINS
from maritaca import local
from maritaca.models import catalogue_names
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model


async def test_landing_page_shows_backend_model_health_and_every_chain(client, app):
    response = await client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/html")
    page = response.text
    assert '<html lang="pt-BR">' in page
    assert "modelo próprio" in page and ">sabia-4<" in page and "no ar" in page
    for name, spec in CHAINS.items():
        assert spec.title in page and spec.description in page
        assert f'href="/{name}/playground/"' in page
        assert f'RemoteRunnable(&quot;http://testserver/{name}/&quot;)' in page
    assert 'href="/ui/"' in page
    # no network beyond the server: no external scripts, styles or fonts
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_landing_page_snippets_run_as_pasted(live_server, emu):
    """The page's curl -N and Python snippets, as a user copies them, stream the answer."""
    page = httpx.get(f"{live_server.url}/", timeout=10, trust_env=False).text
    snippets = [html.unescape(s) for s in re.findall(r"<pre><code>(.*?)</code></pre>", page,
                                                     flags=re.S)]
    assert len(snippets) == 2 * len(CHAINS) + 2  # and the OpenAI and AI SDK clients
    curl = next(s for s in snippets if s.startswith(f"curl -N {live_server.url}/story/text"))
    done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout, done.stderr
    record = emu.requests[-1]
    assert record.body is not None and done.stdout == emu.expected_text(record.body["messages"])
    python = next(s for s in snippets if f'RemoteRunnable("{live_server.url}/qa/")' in s)
    done = subprocess.run([sys.executable, "-c", python], capture_output=True, text=True,
                          timeout=60, env={"NO_PROXY": "127.0.0.1", "PATH": "/usr/bin"})
    assert done.returncode == 0, done.stderr
    record = emu.requests[-1]
    assert record.body is not None and done.stdout == emu.expected_text(record.body["messages"])
    assert "Qual é a capital do Brasil?" in json.dumps(record.body, ensure_ascii=False)
    # the OpenAI SDK's snippet streams the first chain's answer through /v1
    openai = next(s for s in snippets if s.startswith("from openai import OpenAI"))
    done = subprocess.run([sys.executable, "-c", openai], capture_output=True, text=True,
                          timeout=60, env={"NO_PROXY": "127.0.0.1", "PATH": "/usr/bin"})
    assert done.returncode == 0, done.stderr
    record = emu.requests[-1]
    assert record.body is not None and done.stdout == emu.expected_text(record.body["messages"])
    # the AI SDK snippet's address is the AI SDK face, answering the transport's request
    [address] = re.findall(r'api: "([^"]+)"', next(s for s in snippets if "useChat" in s))
    body = {"id": "c1", "trigger": "submit-message", "messageId": None, "messages": [
        {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Brasil"}]}]}
    answer = httpx.post(address, json=body, timeout=30, trust_env=False)
    assert answer.status_code == 200
    assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert '"type":"text-delta"' in answer.text.replace(" ", "")


async def test_landing_page_without_ui_has_no_ui_link(emu):
    app = create_app(ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False),  # type: ignore[call-arg]
                     model=emulator_model(emu))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8123") as http:
        page = (await http.get("/")).text
    assert "/ui/" not in page
    assert "curl -N http://127.0.0.1:8123/story/text" in page


async def test_docs_load_their_assets_from_this_server(client):
    page = (await client.get("/docs")).text
    assert not re.search(r"https?://", page), page
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css"]:
        assert f"/docs-assets/{asset}" in page
        response = await client.get(f"/docs-assets/{asset}")
        assert response.status_code == 200 and len(response.content) > 10_000
    assert (await client.get("/redoc")).status_code == 404  # ReDoc needs a CDN: dropped
    openapi = (await client.get("/openapi.json")).json()
    assert "/story/text" in openapi["paths"] and "/story/invoke" in openapi["paths"]


async def test_healthz_lists_the_models_that_answer(client):
    health = (await client.get("/healthz")).json()
    assert health["model"] == "sabia-4" and health["models"][0] == "sabia-4"
    assert health["models"] == list(dict.fromkeys(["sabia-4", *catalogue_names()]))


async def test_a_model_outside_the_catalogue_offers_only_itself(emu):
    """A backend whose model is not Maritaca's (the embedded SmolLM2 is one) offers only
    its own name: choosing a Sabiá is a 422 on every face, never a lie in model_name."""
    app = create_app(ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False),  # type: ignore[call-arg]
                     model=emulator_model(emu, model=local.MODEL_NAME))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        assert (await http.get("/healthz")).json()["models"] == [local.MODEL_NAME]
        schema = (await http.get("/story/config_schema")).json()
        model = schema["$defs"]["Configurable"]["properties"]["model"]
        assert model["default"] == local.MODEL_NAME and model.get("enum", [model.get("const")]
                                                               ) == [local.MODEL_NAME]
        sabia = {"configurable": {"model": "sabia-4"}}
        invoke = await http.post("/story/invoke", json={"input": {"topic": "x"},
                                                        "config": sabia})
        assert invoke.status_code == 422 and local.MODEL_NAME in invoke.text
        text = await http.post("/story/text", json={"input": {"topic": "x"}, "config": sabia})
        assert text.status_code == 422 and local.MODEL_NAME in text.text
        page = (await http.get("/")).text
        assert f">{local.MODEL_NAME}<" in page
    assert emu.requests == []


@pytest.mark.local_model
@pytest.mark.timeout(180)
def test_on_the_embedded_model_every_face_names_the_model_that_answered() -> None:
    if not local.is_installed():
        pytest.skip("the embedded llama.cpp backend is not installed (make install builds it)")
    env_free = ServerSettings(_env_file=None, MARITACA_BACKEND="local")  # type: ignore[call-arg]
    app = create_app(env_free)
    with RunningServer(app) as server:
        health = httpx.get(f"{server.url}/healthz", timeout=10, trust_env=False).json()
        assert (health["backend"], health["model"], health["models"]) == (
            "local", local.MODEL_NAME, [local.MODEL_NAME])
        body = {"input": {"topic": "um passarinho"},
                "config": {"configurable": {"max_tokens": 12, "temperature": 0}}}
        events = httpx.post(f"{server.url}/story/stream_events", json=body, timeout=60,
                            trust_env=False).text
        names = set(re.findall(r'"model_name":\s*"([^"]+)"', events))
        assert names == {local.MODEL_NAME}
        assert '"finish_reason":"length"' in events.replace(" ", "")
        wrong = {"input": {"topic": "x"}, "config": {"configurable": {"model": "sabia-4"}}}
        refused = httpx.post(f"{server.url}/story/invoke", json=wrong, timeout=10,
                             trust_env=False)
        assert refused.status_code == 422 and local.MODEL_NAME in refused.text
        started = time.monotonic()
        text = httpx.post(f"{server.url}/story/text", json=body, timeout=60,
                          trust_env=False).text
        assert "[TRUNCATED]" in text and time.monotonic() - started < 30
