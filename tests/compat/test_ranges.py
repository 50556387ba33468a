"""Smoke set for the version ranges in ``pyproject.toml``.

``make compat`` runs it in two venvs built from PyPI, not from ``uv.lock``: one with the
lowest versions the ranges allow for every direct dependency, one with the highest, each
with the project's wheel installed. A failure here means a range promises versions the
project does not work with: raise the lower bound, or cap the upper one. The main suite
does not collect this folder (it runs against ``uv.lock``'s versions).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import uvicorn
from langserve import RemoteRunnable
from limits.aio.storage import RedisStorage

from chains import build_story_chain
from maritaca import ChatMaritaca
from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.connection_limits import BoundedHttpToolsProtocol
from maritaca_chains.settings import ServerSettings

PROMPT = "Conte uma história sobre o Brasil."
STORY = {"topic": "Brasil"}


def _model(emu: MaritacaEmulator) -> ChatMaritaca:
    return ChatMaritaca(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)


def _expected(emu: MaritacaEmulator) -> str:
    """The text the emulator streamed for the last request it served."""
    return emu.expected_text(emu.requests[-1].body["messages"])


def _sse(body: str) -> list[tuple[str, str]]:
    events = []
    for block in body.replace("\r\n", "\n").strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        events.append((fields.get("event", ""), fields.get("data", "")))
    return events


def test_model_streams_sync(emu: MaritacaEmulator) -> None:
    chunks = list(_model(emu).stream(PROMPT))
    assert len([c for c in chunks if c.content]) == 8
    assert "".join(str(c.content) for c in chunks) == _expected(emu)
    assert chunks[-1].usage_metadata and chunks[-1].usage_metadata["output_tokens"] == 8


def test_model_streams_async(emu: MaritacaEmulator) -> None:
    async def run() -> list[str]:
        return [str(c.content) async for c in _model(emu).astream(PROMPT)]

    texts = asyncio.run(run())
    assert len([t for t in texts if t]) == 8 and "".join(texts) == _expected(emu)


def test_chain_astream_events(emu: MaritacaEmulator) -> None:
    chain = build_story_chain(_model(emu))

    async def run() -> list[dict]:
        return [e async for e in chain.astream_events(STORY, version="v2")]

    events = asyncio.run(run())
    kinds = [e["event"] for e in events]
    assert kinds[0] == "on_chain_start" and kinds[-1] == "on_chain_end"
    tokens = [e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream"]
    assert len(tokens) > 1 and "".join(tokens) == _expected(emu)
    assert events[-1]["data"]["output"] == _expected(emu)


def test_server_stream(emu: MaritacaEmulator, server_url: str) -> None:
    response = httpx.post(f"{server_url}/story/stream", json={"input": STORY}, timeout=30,
                          trust_env=False)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse(response.text)
    assert events[0][0] == "metadata" and events[-1][0] == "end"
    texts = [json.loads(data) for kind, data in events if kind == "data"]
    assert len(texts) > 1 and "".join(texts) == _expected(emu)


def test_server_stream_events(emu: MaritacaEmulator, server_url: str) -> None:
    response = httpx.post(f"{server_url}/qa/stream_events",
                          json={"input": {"question": "Qual é a capital do Brasil?"}},
                          timeout=30, trust_env=False)
    assert response.status_code == 200, response.text
    events = [json.loads(d) for kind, d in _sse(response.text) if kind == "data"]
    assert events[-1]["event"] == "on_chain_end"
    tokens = [e["data"]["chunk"]["content"] for e in events
              if e["event"] == "on_chat_model_stream"]
    assert len(tokens) > 1 and "".join(tokens) == _expected(emu)


def test_remote_runnable(emu: MaritacaEmulator, server_url: str) -> None:
    remote = RemoteRunnable(f"{server_url}/story/")
    streamed = list(remote.stream(STORY))
    assert len(streamed) > 1 and "".join(streamed) == _expected(emu)

    async def run() -> tuple[list[str], str]:
        # a client of its own, closed on this loop (LangServe would close it at exit, on
        # a new loop its connections do not belong to)
        remote = RemoteRunnable(f"{server_url}/story/")
        try:
            return [c async for c in remote.astream(STORY)], await remote.ainvoke(STORY)
        finally:
            await remote.async_client.aclose()

    chunks, invoked = asyncio.run(run())
    assert "".join(chunks) == invoked == "".join(streamed)


def test_worker_config_loads(emu: MaritacaEmulator, monkeypatch) -> None:
    """What each worker of ``maritaca-chains serve --workers N`` loads: the app factory and
    the bounded protocol, both as import strings (uvicorn < 0.36 knew only its own
    protocol names). Starting real workers is the main suite's test_metrics."""
    monkeypatch.setenv("MARITACA_API_KEY", emu.api_key or "k")
    monkeypatch.setenv("MARITACA_BASE_URL", emu.base_url)
    config = uvicorn.Config("maritaca_chains.app:app_factory", factory=True,
                            http=f"{BoundedHttpToolsProtocol.__module__}:BoundedHttpToolsProtocol")
    config.load()
    assert issubclass(config.http_protocol_class, BoundedHttpToolsProtocol)


def test_app_builds_with_redis_quotas(emu: MaritacaEmulator) -> None:
    """Quotas and runs on Redis (shared by replicas): limits' Redis storage checks the
    redis client's version when it is built (limits 5 wants redis 5.2). Building the app
    connects to nothing, so no Redis server is needed here (the main suite has one)."""
    settings = ServerSettings(_env_file=None, MARITACA_CHAINS_RATE_LIMIT="10/minute",  # type: ignore[call-arg]
                              MARITACA_CHAINS_REDIS_URL="redis://127.0.0.1:9/0")
    app = create_app(settings, model=_model(emu))
    assert isinstance(app.state.quotas.storage, RedisStorage)
