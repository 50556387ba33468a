"""The LangServe server over the emulator: every route, every fault, bad input, cancellation."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time

import httpx
import pytest
from langserve import RemoteRunnable

from chains import CHAINS
from maritaca.testing import Scenario
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model, wait_disconnected

INPUTS = {"story": {"topic": "Brasil"}, "qa": {"question": "Qual é a capital do Brasil?"},
          "summarize": {"text": "O sabiá é a ave símbolo do Brasil. Ele canta ao amanhecer."},
          "chat": {"message": "Olá! Quem é você?"}}


def sse_events(body: str) -> list[tuple[str, str]]:
    events = []
    for block in body.replace("\r\n", "\n").strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        events.append((fields.get("event", ""), fields.get("data", "")))
    return events


# ---------------------------------------------------------------- RemoteRunnable, real uvicorn


@pytest.mark.parametrize("name", list(CHAINS))
async def test_remote_runnable_every_method(live_server, emu, name):
    remote = RemoteRunnable(f"{live_server.url}/{name}/")
    value = INPUTS[name]
    invoked = await remote.ainvoke(value)
    streamed = [c async for c in remote.astream(value)]
    assert len(streamed) > 1, "the answer must arrive in several chunks"
    assert "".join(streamed) == invoked  # same emulator response, streamed or not
    assert await remote.abatch([value, value]) == [invoked, invoked]
    events = [e async for e in remote.astream_events(value, version="v2")]
    tokens = [e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream"]
    assert "".join(tokens) == invoked
    assert await asyncio.to_thread(lambda: "".join(remote.stream(value))) == invoked
    assert await asyncio.to_thread(remote.invoke, value) == invoked
    # closed on this loop: LangServe's finalizer would close it on a loop of its own,
    # after this one has closed ("Event loop is closed")
    await remote.async_client.aclose()


async def test_remote_runnable_gets_the_upstream_cause(live_server, emu):
    remote = RemoteRunnable(f"{live_server.url}/story/")
    emu.enqueue(Scenario.rate_limit(retry_after=7))
    with pytest.raises(httpx.HTTPStatusError) as info:
        [c async for c in remote.astream(INPUTS["story"])]
    assert info.value.response.status_code == 429
    assert "rate limit" in str(info.value) and "Retry after 7 s" in str(info.value)
    emu.enqueue(Scenario.unauthorized())
    with pytest.raises(httpx.HTTPStatusError) as info:
        await remote.ainvoke(INPUTS["story"])
    assert info.value.response.status_code == 502
    assert "upstream_authentication" in str(info.value) and "MARITACA_API_KEY" in str(info.value)
    await remote.async_client.aclose()


async def test_a_batch_stops_its_other_runs_at_its_first_failure(live_server, emu, caplog):
    """One input of a /batch fails: the request fails at once, and the other input's run
    has been stopped and accounted for (its ledger line written, its upstream request
    closed) before the error goes out. langchain-core's batch would leave it running as a
    task of its own, to end after the response, unseen."""
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    emu.enqueue(Scenario.unauthorized(), Scenario.slow_first_token(3.0))
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        response = await http.post("/story/batch", json={"inputs": [INPUTS["story"]] * 2})
        answered = time.monotonic()
        outcomes = sorted(json.loads(r.getMessage())["outcome"] for r in caplog.records
                          if r.name == "maritaca_chains.runs")
    assert response.status_code == 502 and "upstream_authentication" in response.text
    assert outcomes == ["cancelled", "upstream_authentication"]
    slow = [r for r in emu.requests if r.scenario == "slow_first_token"]
    # the other run is stopped wherever the failure finds it: its upstream request open
    # (then closed before the answer) or, on a quick failure, not yet sent
    assert len(slow) <= 1 and all(r.chunks_sent == 0 for r in slow)
    for record in slow:
        await asyncio.to_thread(wait_disconnected, record, answered)


async def test_a_failed_run_is_logged_once_with_its_run_id(client, emu, caplog):
    """A stream's failed run is logged with its run id (the cause its error event names);
    a /batch failure answers before any body, by the exception handler's one line."""
    caplog.set_level(logging.INFO, logger="maritaca_chains.server")
    emu.enqueue(Scenario.unauthorized())
    await client.post("/story/stream", json={"input": INPUTS["story"]})
    emu.enqueue(Scenario.unauthorized())
    response = await client.post("/story/batch", json={"inputs": [INPUTS["story"]]})
    assert response.status_code == 502
    lines = [r.getMessage() for r in caplog.records if r.name == "maritaca_chains.server"]
    run_failed = [line for line in lines if re.match(r"run [0-9a-f-]{36} failed", line)]
    assert len(run_failed) == 1 and "AuthenticationError" in run_failed[0], lines
    assert any(line.startswith("POST /story/batch failed") for line in lines), lines


# -------------------------------------------------------------------------- SSE bytes


async def test_stream_sse_bytes(client, emu):
    response = await client.post("/story/stream", json={"input": INPUTS["story"]})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[0][0] == "metadata" and "run_id" in json.loads(events[0][1])
    assert events[-1][0] == "end"
    text = "".join(json.loads(data) for kind, data in events if kind == "data")
    messages = emu.requests[-1].body["messages"]
    assert text == emu.expected_text(messages)


async def test_stream_events_sse_bytes(client, emu):
    response = await client.post("/qa/stream_events", json={"input": INPUTS["qa"],
                                                            "version": "v2"} if False else
                                 {"input": INPUTS["qa"]})
    assert response.status_code == 200
    events = sse_events(response.text)
    kinds = [json.loads(d)["event"] for k, d in events if k == "data"]
    assert "on_chat_model_stream" in kinds and kinds[-1] == "on_chain_end"
    tokens = [json.loads(d)["data"]["chunk"]["content"] for k, d in events
              if k == "data" and json.loads(d)["event"] == "on_chat_model_stream"]
    assert "".join(tokens) == emu.expected_text(emu.requests[-1].body["messages"])


async def test_stream_log_and_playground_and_schemas(client):
    response = await client.post("/story/stream_log", json={"input": INPUTS["story"]})
    assert response.status_code == 200 and "event: data" in response.text
    page = await client.get("/story/playground/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    schema = (await client.get("/story/input_schema")).json()
    assert schema["properties"]["topic"]["maxLength"] == 500
    assert "description" in schema["properties"]["topic"]
    config = (await client.get("/story/config_schema")).json()
    assert "api_key" not in json.dumps(config) and "base_url" not in json.dumps(config)


async def test_health_and_index(client):
    health = (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["backend"] == "custom"
    assert health["model"] == "sabia-4" and "test-key" not in json.dumps(health)
    index = await client.get("/")
    for name in CHAINS:
        assert f'href="/{name}/playground/"' in index.text


# ----------------------------------------------------------------------------- faults


@pytest.mark.parametrize(("scenario", "status", "kind"), [
    (Scenario.unauthorized(), 502, "upstream_authentication"),
    (Scenario.rate_limit(retry_after=2.5), 429, "rate_limit"),
    (Scenario.server_error(), 502, "upstream_error"),
    (Scenario.drop(after_chunks=3), 502, "upstream_stream_broken"),
    (Scenario.error_event(after_chunks=3, message="modelo sobrecarregado"), 502,
     "upstream_stream_broken"),
    (Scenario.context_too_long(), 400, "context_too_long"),
])
async def test_upstream_faults_reach_the_stream_client_with_their_cause(client, emu, scenario,
                                                                         status, kind):
    emu.enqueue(scenario)
    response = await client.post("/story/stream", json={"input": INPUTS["story"]})
    kinds = sse_events(response.text)
    error = json.loads(kinds[-1][1])
    assert kinds[-1][0] == "error"
    assert error["status_code"] == status and error["type"] == kind
    assert "Internal Server Error" not in error["message"]
    assert "test-key" not in response.text
    if kind == "rate_limit":
        assert error["retry_after"] == 2.5


async def test_connection_refused_is_upstream_unavailable(emu):
    from maritaca import ChatMaritaca
    from maritaca.testing import closed_port_url

    app = create_app(ServerSettings(_env_file=None),  # type: ignore[call-arg]
                     model=ChatMaritaca(base_url=closed_port_url(), api_key="k", max_retries=0))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post("/story/invoke", json={"input": INPUTS["story"]})
    assert response.status_code == 503
    assert response.json()["type"] == "upstream_unavailable"
    assert "Could not connect" in response.json()["detail"]


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("body", "field"), [
    ({"input": {"topic": "x" * 501}}, "topic"),
    ({"input": {"topic": 42}}, "topic"),
    ({"input": {}}, "topic"),
    ({"input": {"topic": "x", "length": "enorme"}}, "length"),
    ({"input": {"topic": "x", "surprise": 1}}, "surprise"),
    ({"input": {"topic": "x"}, "config": {"configurable": {"api_key": "mine"}}}, "api_key"),
    ({"input": {"topic": "x"}, "config": {"configurable": {"base_url": "http://evil"}}},
     "base_url"),
    ({"input": {"topic": "x"}, "config": {"configurable": {"temperature": 9}}}, "temperature"),
    ({"input": {"topic": "x"}, "config": {"configurable": {"model": "gpt-4"}}}, "model"),
])
@pytest.mark.parametrize("route", ["invoke", "stream", "stream_events", "batch"])
async def test_bad_input_is_422_naming_the_field(client, body, field, route):
    if route == "batch":
        body = {"inputs": [body["input"]], **({"config": body["config"]} if "config" in body
                                              else {})}
    response = await client.post(f"/story/{route}", json=body)
    assert response.status_code == 422, response.text
    assert field in response.text


async def test_null_config_is_no_config_and_huge_bodies_are_413(client):
    response = await client.post("/story/invoke", json={"input": INPUTS["story"],
                                                         "config": None})
    assert response.status_code == 200
    response = await client.post("/story/invoke", content=b'{"input": {"topic": "' +
                                 b"x" * (9 * 2**20) + b'"}}',
                                 headers={"content-type": "application/json"})
    assert response.status_code == 413 and "MiB" in response.text


async def test_malformed_json_is_422(client):
    response = await client.post("/story/invoke", content=b"{not json",
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422


# ---------------------------------------------------------------------------- cancellation


def test_client_disconnect_closes_the_upstream_request(caplog):
    from maritaca.testing import MaritacaEmulator

    caplog.set_level("INFO", logger="maritaca_chains.server")
    with MaritacaEmulator(reply_tokens=400, token_delay=0.01) as emulator:
        app = create_app(ServerSettings(_env_file=None),  # type: ignore[call-arg]
                         model=emulator_model(emulator))
        with RunningServer(app) as server, httpx.Client(timeout=10) as http:
            for route in ("stream", "stream_events"):
                with http.stream("POST", f"{server.url}/story/{route}",
                                 json={"input": INPUTS["story"]}) as response:
                    for i, _line in enumerate(response.iter_lines()):
                        if i > 12:
                            break
                closed_at = time.monotonic()
                record = emulator.requests[-1]
                wait_disconnected(record, closed_at)
                assert record.chunks_sent < 100, route
    # a client going away is logged as a cancellation, not as a failed run
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert sum("cancelled: the client disconnected" in r.getMessage()
               for r in caplog.records) == 2


def test_hanging_up_while_the_server_is_busy_still_closes_the_upstream():
    # an answer sent as fast as the socket allows: the hang-up lands while the server is
    # writing, and LangServe keeps the abandoned generators alive through the cancellation
    from maritaca.testing import MaritacaEmulator

    with MaritacaEmulator(reply_tokens=32_000) as emulator:
        app = create_app(ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False),  # type: ignore[call-arg]
                         model=emulator_model(emulator))
        with RunningServer(app) as server, httpx.Client(timeout=10) as http:
            for trial in range(12):
                route = ("stream", "stream_events")[trial % 2]
                body = {"input": INPUTS["story"],
                        "config": {"configurable": {"max_tokens": 32_000}}}
                with http.stream("POST", f"{server.url}/story/{route}", json=body) as response:
                    for i, _line in enumerate(response.iter_lines()):
                        if i > 20:
                            break
                deadline = time.monotonic() + 2
                while (still := http.get(f"{server.url}/healthz").json()[
                        "open_upstream_streams"]) and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert still == 0, f"trial {trial} /{route}: the upstream stream stayed open"


def test_a_mid_stream_failure_ends_the_body_cleanly(caplog):
    from maritaca.testing import MaritacaEmulator

    with MaritacaEmulator(reply_tokens=40) as emulator:
        app = create_app(ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False),  # type: ignore[call-arg]
                         model=emulator_model(emulator))
        with RunningServer(app) as server, httpx.Client(timeout=10) as http:
            for route, scenario in itertools.product(
                    ("stream", "stream_events"),
                    (Scenario.drop(after_chunks=5), Scenario.error_event(after_chunks=5))):
                emulator.enqueue(scenario)
                response = http.post(f"{server.url}/story/{route}",
                                     json={"input": INPUTS["story"]})
                events = [block for block in response.text.split("\r\n\r\n") if block]
                # the error event LangServe sends just before it re-raises is not lost
                assert events[-1].startswith("event: error"), (route, events[-3:])
                assert json.loads(events[-1].split("data: ", 1)[1])["type"] == \
                    "upstream_stream_broken"
                assert sum(e.startswith("event: data") for e in events) >= 5, route
    assert "Exception in ASGI application" not in caplog.text


# ----------------------------------------------------------------------- access control


async def test_access_keys_guard_every_chain_route(emu):
    settings = ServerSettings(_env_file=None, MARITACA_CHAINS_API_KEYS="k1,k2")  # type: ignore[call-arg]
    app = create_app(settings, model=emulator_model(emu))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        body = {"input": INPUTS["story"]}
        assert (await http.post("/story/invoke", json=body)).status_code == 401
        wrong = await http.post("/story/invoke", json=body, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and "X-API-Key" in wrong.text
        assert (await http.post("/story/invoke", json=body,
                                headers={"X-API-Key": "k2"})).status_code == 200
        assert (await http.post("/qa/stream", json={"input": INPUTS["qa"]},
                                headers={"Authorization": "Bearer k1"})).status_code == 200
        assert (await http.get("/story/playground/")).status_code == 401
        assert (await http.get("/healthz")).status_code == 200


async def test_without_keys_only_loopback_clients_are_served(emu):
    app = create_app(ServerSettings(_env_file=None), model=emulator_model(emu))  # type: ignore[call-arg]
    outside = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
    async with httpx.AsyncClient(transport=outside, base_url="http://t") as http:
        response = await http.post("/story/invoke", json={"input": INPUTS["story"]})
    assert response.status_code == 403 and "MARITACA_CHAINS_API_KEYS" in response.text


def test_refuses_public_bind_without_keys():
    with pytest.raises(ValueError, match="MARITACA_CHAINS_API_KEYS"):
        ServerSettings(_env_file=None, host="0.0.0.0").check_exposure()  # type: ignore[call-arg]
    ServerSettings(_env_file=None, host="0.0.0.0",  # type: ignore[call-arg]
                   MARITACA_CHAINS_API_KEYS="k").check_exposure()


@pytest.mark.parametrize("name", ["story", "qa", "summarize"])
async def test_schemas_have_no_nullable_fields_the_playground_cannot_render(client, name):
    for schema in ("input_schema", "config_schema"):
        response = await client.get(f"/{name}/{schema}")
        assert response.status_code == 200
        assert '"null"' not in response.text, f"/{name}/{schema}: {response.text}"
