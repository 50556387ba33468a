"""One token-budget rule on every face (issue 25): the chain file's budget unless the
client names a max_tokens. A short story is 300 tokens however it is asked for; the
emulator's request log says what the model was really asked."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from langserve import RemoteRunnable
from websockets.asyncio.client import connect

from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.faces import END, chat_fn
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model

pytestmark = pytest.mark.timeout(120)

STORY = {"topic": "Brasil"}  # a short story: 100 + 200 tokens by prompts/story.yaml
SHORT = 300


@pytest.fixture(scope="module")
def server():
    with MaritacaEmulator(reply_tokens=8) as emu:
        app = create_app(ServerSettings(_env_file=None), model=emulator_model(emu))  # type: ignore[call-arg]
        with RunningServer(app) as running:
            yield emu, running, app


def asked(emu: MaritacaEmulator) -> int:
    return emu.requests[-1].body["max_tokens"]


def _http(server) -> httpx.Client:
    return httpx.Client(base_url=server[1].url, timeout=20)


# every face's forms of the same request, none naming max_tokens
def _invoke(http, config):
    body = {"input": STORY} if config is None else {"input": STORY, "config": config}
    assert http.post("/story/invoke", json=body).status_code == 200


def _stream(http, config):
    body = {"input": STORY} if config is None else {"input": STORY, "config": config}
    with http.stream("POST", "/story/stream", json=body) as response:
        assert response.status_code == 200 and "event: end" in response.read().decode()


def _stream_events(http, config):
    body = {"input": STORY, "config": config or {}}
    with http.stream("POST", "/story/stream_events", json=body) as response:
        assert response.status_code == 200 and "event: end" in response.read().decode()


def _batch(http, config):
    body = {"inputs": [STORY]} if config is None else {"inputs": [STORY], "config": config}
    assert http.post("/story/batch", json=body).status_code == 200


def _text(http, config):
    body = STORY if config is None else {"input": STORY, "config": config}
    assert http.post("/story/text", json=body).status_code == 200


def _runs(http, config):
    body = {"input": STORY} if config is None else {"input": STORY, "config": config}
    started = http.post("/story/runs", json=body)
    assert started.status_code == 201, started.text
    with http.stream("GET", started.json()["stream_url"]) as response:
        assert "event: end" in response.read().decode()


FACES = [_invoke, _stream, _stream_events, _batch, _text, _runs]
CONFIGS = [None, {}, {"configurable": {}}, {"configurable": {"temperature": 0.3}},
           # what the playground sends: its form, filled with the config schema's defaults
           {"configurable": {"max_tokens": 0, "model": "sabia-4", "temperature": 0.7}}]


@pytest.mark.parametrize("config", CONFIGS, ids=["none", "empty", "configurable-empty",
                                                 "temperature", "playground-defaults"])
@pytest.mark.parametrize("face", FACES, ids=lambda f: f.__name__.strip("_"))
def test_every_http_face_asks_for_the_chains_budget(server, face, config):
    with _http(server) as http:
        face(http, config)
    assert asked(server[0]) == SHORT


@pytest.mark.parametrize("face", FACES, ids=lambda f: f.__name__.strip("_"))
def test_a_max_tokens_the_client_names_wins_on_every_face(server, face):
    with _http(server) as http:
        face(http, {"configurable": {"max_tokens": 77, "temperature": 0.3}})
    assert asked(server[0]) == 77


@pytest.mark.parametrize("config", [None, {"temperature": 0.3}, {"max_tokens": 77}])
async def test_remote_runnable(server, config):
    remote = RemoteRunnable(f"{server[1].url}/story/")
    chain = remote if config is None else remote.with_config(configurable=config)
    await chain.ainvoke(STORY)
    assert asked(server[0]) == (77 if config and "max_tokens" in config else SHORT)
    "".join([c async for c in chain.astream(STORY)])
    assert asked(server[0]) == (77 if config and "max_tokens" in config else SHORT)


@pytest.mark.parametrize(("message", "budget"), [
    ("Brasil", SHORT),  # plain text: the main field
    (json.dumps(STORY), SHORT),
    (json.dumps({"input": STORY, "config": {"configurable": {"temperature": 0.3}}}), SHORT),
    (json.dumps({"input": STORY, "config": {"configurable": {"max_tokens": 77}}}), 77),
])
async def test_websocket(server, message, budget):
    async with connect(server[1].url.replace("http://", "ws://") + "/story/ws") as ws:
        await ws.send(message)
        async with asyncio.timeout(15):
            while await ws.recv() != END:
                pass
    assert asked(server[0]) == budget


@pytest.mark.parametrize(("max_tokens", "budget"), [(None, SHORT), (0, SHORT), (77, 77)])
async def test_the_ui(server, max_tokens, budget):
    respond = chat_fn(server[2].state.chains)
    async for _ in respond("story", dict(STORY), temperature=0.3, max_tokens=max_tokens):
        pass
    assert asked(server[0]) == budget


def test_the_playgrounds_form_shows_0_the_chains_budget(server):
    with _http(server) as http:
        schema = http.get("/story/config_schema").json()
    field = schema["$defs"]["Configurable"]["properties"]["max_tokens"]
    assert field["default"] == 0 and "own budget" in field["description"]
