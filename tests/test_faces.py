"""The streaming faces over the emulator: /<name>/text and /<name>/ws (the Gradio /ui:
tests/test_ui.py)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from maritaca.testing import MaritacaEmulator, RecordedRequest, Scenario
from maritaca_chains import create_app
from maritaca_chains.faces import END, ERROR, STOPPED, TEXT_MEDIA_TYPE, TRUNCATED
from maritaca_chains.settings import ServerSettings
from tests.conftest import SLOW_TOKENS, RunningServer, emulator_model
from tests.conftest import wait_disconnected as conftest_wait_disconnected

pytestmark = pytest.mark.timeout(60)

INPUTS = {"story": {"topic": "Brasil"}, "qa": {"question": "Qual é a capital do Brasil?"},
          "summarize": {"text": "O sabiá é a ave símbolo do Brasil. Ele canta ao amanhecer."}}


def expected(emu: MaritacaEmulator, record: RecordedRequest | None = None,
             reply_tokens: int | None = None) -> str:
    record = record or emu.requests[-1]
    assert record.body is not None
    return emu.expected_text(record.body["messages"], reply_tokens)


def wait_disconnected(record: RecordedRequest, since: float) -> None:
    conftest_wait_disconnected(record, since)
    assert record.chunks_sent < SLOW_TOKENS // 2


def ws_url(server: RunningServer, name: str) -> str:
    return server.url.replace("http://", "ws://") + f"/{name}/ws"


async def read_run(ws: ClientConnection) -> list[str]:
    """Frames up to and including [END]."""
    frames: list[str] = []
    async with asyncio.timeout(15):
        while not frames or frames[-1] != END:
            frame = await ws.recv()
            assert isinstance(frame, str)
            frames.append(frame)
    return frames


def error_of(frame: str) -> dict:
    assert frame.startswith(f"{ERROR} "), frame
    return json.loads(frame.removeprefix(f"{ERROR} "))


# --------------------------------------------------------------------- POST /<name>/text


@pytest.mark.parametrize("name", list(INPUTS))
async def test_text_is_the_chains_answer(client, emu, name):
    response = await client.post(f"/{name}/text", json=INPUTS[name])
    assert response.status_code == 200
    assert response.headers["content-type"] == TEXT_MEDIA_TYPE
    assert response.text == expected(emu)
    invoked = await client.post(f"/{name}/invoke", json={"input": INPUTS[name]})
    assert response.text == invoked.json()["output"]


async def test_text_streams_and_hanging_up_closes_the_upstream(slow):
    emu, server = slow
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("POST", f"{server.url}/story/text",
                               json=INPUTS["story"]) as response:
            pieces = []
            async for piece in response.aiter_text():
                pieces.append(piece)
                if len(pieces) == 3:
                    break
            record = emu.requests[-1]
            assert record.finished_at is None, "text arrived only after the model finished"
        closed_at = time.monotonic()
    assert expected(emu).startswith("".join(pieces))
    await asyncio.to_thread(wait_disconnected, record, closed_at)


async def test_text_hanging_up_before_the_first_token_closes_the_upstream(slow):
    emu, server = slow
    emu.enqueue(Scenario.slow_first_token(delay=5))
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.5)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{server.url}/story/text", json=INPUTS["story"])
    closed_at = time.monotonic()
    await asyncio.to_thread(wait_disconnected, emu.requests[-1], closed_at)


@pytest.mark.parametrize(("path", "body"), [
    ("/story/invoke", {"input": INPUTS["story"]}),
    ("/story/batch", {"inputs": [INPUTS["story"]]}),
])
async def test_hanging_up_on_a_whole_answer_closes_the_upstream(slow, path, body):
    """LangServe's /invoke and /batch answer once the run is over: a client that stops
    waiting stops the run and its call to Maritaca (langserve_compat.whole_answer_hang_up)."""
    emu, server = slow
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.5)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{server.url}{path}", json=body)
    closed_at = time.monotonic()
    record = emu.requests[-1]
    await asyncio.to_thread(wait_disconnected, record, closed_at)  # and not read to its end


@pytest.mark.parametrize(("body", "field"), [
    ({"topic": "x" * 501}, "topic"),
    ({"topic": 42}, "topic"),
    ({}, "topic"),
    ({"topic": "x", "length": "enorme"}, "length"),
    ({"topic": "x", "surprise": 1}, "surprise"),
    (b"{not json", "json_invalid"),
])
async def test_text_bad_input_is_422_naming_the_field(client, emu, body, field):
    if isinstance(body, bytes):
        response = await client.post("/story/text", content=body,
                                     headers={"content-type": "application/json"})
    else:
        response = await client.post("/story/text", json=body)
    assert response.status_code == 422, response.text
    assert field in json.dumps(response.json()["detail"])
    assert emu.requests == []


async def test_text_needs_a_json_body(client, emu):
    response = await client.post("/story/text", content=b'{"topic": "Brasil"}',
                                 headers={"content-type": "text/plain"})
    assert response.status_code == 415 and "application/json" in response.text
    assert emu.requests == []


@pytest.mark.parametrize(("scenario", "status", "kind"), [
    (Scenario.rate_limit(retry_after=2.5), 429, "rate_limit"),
    (Scenario.unauthorized(), 502, "upstream_authentication"),
    (Scenario.server_error(), 502, "upstream_error"),
    (Scenario.context_too_long(), 400, "context_too_long"),
])
async def test_text_upstream_failure_before_the_first_byte_is_a_json_error(client, emu,
                                                                           scenario, status,
                                                                           kind):
    emu.enqueue(scenario)
    response = await client.post("/story/text", json=INPUTS["story"])
    assert response.status_code == status
    error = response.json()
    assert error["type"] == kind and kind in error["detail"]
    assert "test-key" not in response.text
    if kind == "rate_limit":
        # the body keeps the exact wait; HTTP's header has whole seconds only
        assert error["retry_after"] == 2.5 and response.headers["retry-after"] == "3"
    if kind == "upstream_authentication":
        assert "MARITACA_API_KEY" in error["detail"]


@pytest.mark.parametrize("retry_after", ["inf", "nan", "1e999"])
async def test_an_upstream_wait_that_is_no_number_is_still_a_rate_limit(client, emu,
                                                                        retry_after):
    emu.enqueue(Scenario.rate_limit(retry_after=retry_after))
    response = await client.post("/story/invoke", json={"input": INPUTS["story"]})
    assert response.status_code == 429 and response.json()["type"] == "rate_limit"
    assert "retry-after" not in response.headers  # no wait we could pass on


@pytest.mark.parametrize("scenario", [
    Scenario.error_event(after_chunks=3, message="modelo sobrecarregado"),
    Scenario.drop(after_chunks=3),
])
async def test_text_upstream_failure_mid_stream_ends_with_an_error_line(client, emu, scenario):
    emu.enqueue(scenario)
    response = await client.post("/story/text", json=INPUTS["story"])
    assert response.status_code == 200
    text, _, error = response.text.partition(f"\n{ERROR} ")
    assert text and expected(emu).startswith(text) and text != expected(emu)
    assert "upstream_stream_broken" in error and response.text.endswith("\n")
    if scenario.message:
        assert scenario.message in error


async def test_text_takes_langserves_envelope_with_configurable(client, emu):
    body = {"input": INPUTS["story"], "config": {"configurable": {
        "model": "sabiazinho-4", "temperature": 0, "max_tokens": 300}}}
    response = await client.post("/story/text", json=body)
    assert response.status_code == 200 and response.text == expected(emu)
    sent = emu.requests[-1].body
    assert sent is not None
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("sabiazinho-4", 0, 300)


async def test_text_cut_by_max_tokens_ends_with_a_truncated_line(client, emu):
    body = {"input": INPUTS["story"], "config": {"configurable": {"max_tokens": 5}}}
    response = await client.post("/story/text", json=body)
    text, marker, note = response.text.partition(f"\n{TRUNCATED} ")
    # (the emulator's expected text is the reply before the max_tokens cut)
    assert marker and expected(emu).startswith(text) and len(text.split()) == 5
    assert "max_tokens=5" in note and response.text.endswith("\n")
    whole = await client.post("/story/text", json=INPUTS["story"])  # not cut: no marker
    assert TRUNCATED not in whole.text


@pytest.mark.parametrize(("configurable", "named"), [
    ({"api_key": "k"}, "api_key"),
    ({"base_url": "http://evil.example"}, "base_url"),
    ({"temperature": 9}, "temperature"),
    ({"max_tokens": -1}, "max_tokens"),  # 0 means the chain's own budget
    ({"max_tokens": "many"}, "max_tokens"),
    ({"model": "gpt-4"}, "model"),
])
async def test_text_refuses_what_langserve_refuses_in_configurable(client, emu, configurable,
                                                                    named):
    body = {"input": INPUTS["story"], "config": {"configurable": configurable}}
    response = await client.post("/story/text", json=body)
    assert response.status_code == 422, response.text
    assert named in response.text
    langserve = await client.post("/story/invoke", json=body)
    assert langserve.status_code == 422
    assert emu.requests == []


async def test_text_envelope_input_errors_name_the_field(client, emu):
    response = await client.post("/story/text", json={"input": {"topic": "   "}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "input", "topic"]
    assert emu.requests == []


# ----------------------------------------------------------------------- WS /<name>/ws


async def test_ws_answers_many_messages_per_connection(live_server, emu):
    async with connect(ws_url(live_server, "story")) as ws:
        await ws.send(json.dumps({"topic": "Brasil"}))
        runs = [await read_run(ws)]
        await ws.send("Pantanal")  # plain text: the story's topic
        runs.append(await read_run(ws))
        await ws.send("Amazônia")  # sent together: answered in turn
        await ws.send(json.dumps({"topic": "Cerrado", "style": "cordel"}))
        runs += [await read_run(ws), await read_run(ws)]
    records = emu.requests
    assert len(records) == 4
    for run, record, topic in zip(runs, records, ["Brasil", "Pantanal", "Amazônia", "Cerrado"],
                                  strict=True):
        assert len(run) > 3 and run.count(END) == 1
        assert "".join(run[:-1]) == expected(emu, record)
        assert topic in json.dumps(record.body, ensure_ascii=False)
    assert len({"".join(run) for run in runs}) == 4


@pytest.mark.parametrize("name", list(INPUTS))
async def test_ws_plain_text_is_the_main_field(live_server, emu, name):
    main = next(iter(INPUTS[name].values()))
    async with connect(ws_url(live_server, name)) as ws:
        await ws.send(main)
        run = await read_run(ws)
    assert "".join(run[:-1]) == expected(emu)
    assert main in json.dumps(emu.requests[-1].body, ensure_ascii=False)


@pytest.mark.parametrize("stop", ["stop", '{"action": "stop"}'])
async def test_ws_stop_closes_the_upstream_and_the_connection_stays(slow, stop):
    emu, server = slow
    async with connect(ws_url(server, "story")) as ws:
        await ws.send("Brasil")
        first = [await ws.recv() for _ in range(3)]
        await ws.send(stop)
        stopped_at = time.monotonic()
        rest = await read_run(ws)
        assert rest[-2:] == [STOPPED, END]
        await asyncio.to_thread(wait_disconnected, emu.requests[-1], stopped_at)
        assert expected(emu).startswith("".join(first + rest[:-2]))
        await ws.send("stop")  # idle: ignored
        emu.enqueue(Scenario.ok(reply_tokens=5))
        await ws.send("Pantanal")
        run = await read_run(ws)
    assert STOPPED not in run and "".join(run[:-1]) == expected(emu, reply_tokens=5)


async def test_ws_hanging_up_closes_the_upstream(slow):
    emu, server = slow
    async with connect(ws_url(server, "story")) as ws:
        await ws.send("Brasil")
        for _ in range(3):
            await ws.recv()
    closed_at = time.monotonic()
    await asyncio.to_thread(wait_disconnected, emu.requests[-1], closed_at)


async def test_ws_errors_are_frames_and_the_connection_stays(live_server, emu):
    async with connect(ws_url(live_server, "story")) as ws:
        await ws.send("{not json")
        run = await read_run(ws)
        assert len(run) == 2 and error_of(run[0])["type"] == "invalid_input"
        await ws.send(json.dumps({"topic": "x", "surprise": 1}))
        error = error_of((await read_run(ws))[0])
        assert error["status_code"] == 422 and error["errors"][0]["loc"] == ["surprise"]
        assert "surprise" in error["message"]
        await ws.send("")  # an empty topic
        assert error_of((await read_run(ws))[0])["errors"][0]["loc"] == ["topic"]
        assert emu.requests == []

        emu.enqueue(Scenario.rate_limit(retry_after=2))
        await ws.send("Brasil")
        error = error_of((await read_run(ws))[0])
        assert (error["type"], error["status_code"], error["retry_after"]) == ("rate_limit",
                                                                               429, 2)
        emu.enqueue(Scenario.unauthorized())
        await ws.send("Brasil")
        error = error_of((await read_run(ws))[0])
        assert error["type"] == "upstream_authentication" and error["status_code"] == 502
        assert "test-key" not in json.dumps(error)

        emu.enqueue(Scenario.error_event(after_chunks=3, message="modelo sobrecarregado"))
        await ws.send("Brasil")
        run = await read_run(ws)
        assert len(run) == 5 and error_of(run[3])["type"] == "upstream_stream_broken"
        assert "modelo sobrecarregado" in run[3]

        await ws.send("Brasil")
        run = await read_run(ws)
    assert "".join(run[:-1]) == expected(emu)


async def test_ws_takes_configurable_and_says_when_the_answer_was_cut(live_server, emu):
    async with connect(ws_url(live_server, "story")) as ws:
        await ws.send(json.dumps({"input": {"topic": "Brasil"}, "config": {
            "configurable": {"model": "sabiazinho-4", "temperature": 0, "max_tokens": 4}}}))
        run = await read_run(ws)
        cut, end = run[-2:]
        assert end == END and cut.startswith(f"{TRUNCATED} ")
        assert json.loads(cut.removeprefix(f"{TRUNCATED} "))["max_tokens"] == 4
        answer = "".join(run[:-2])
        assert expected(emu).startswith(answer) and len(answer.split()) == 4
        sent = emu.requests[-1].body
        assert sent is not None and (sent["model"], sent["temperature"]) == ("sabiazinho-4", 0)
        await ws.send(json.dumps({"input": {"topic": "Brasil"},
                                  "config": {"configurable": {"temperature": 5}}}))
        error = error_of((await read_run(ws))[0])
        assert error["status_code"] == 422 and "temperature" in error["message"]
        await ws.send(json.dumps({"input": {"topic": "Brasil"},
                                  "config": {"configurable": {"model": "gpt-4"}}}))
        error = error_of((await read_run(ws))[0])
        assert error["errors"][0]["loc"] == ["config", "configurable", "model"]
        await ws.send("   ")  # whitespace only: refused, naming the field
        assert error_of((await read_run(ws))[0])["errors"][0]["loc"] == ["topic"]
        await ws.send("Pantanal")  # plain text, no cut: no marker
        run = await read_run(ws)
    assert not any(frame.startswith(TRUNCATED) for frame in run)
    assert len(emu.requests) == 2


async def test_faces_are_behind_the_access_guard(emu):
    settings = ServerSettings(_env_file=None, MARITACA_CHAINS_API_KEYS="k1")  # type: ignore[call-arg]
    app = create_app(settings, model=emulator_model(emu))
    key = {"X-API-Key": "k1"}
    with RunningServer(app) as server:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server, "story")):
                pass
        assert refused.value.response.status_code == 401
        assert b"X-API-Key" in refused.value.response.body
        with pytest.raises(InvalidStatus) as cross_site:
            async with connect(ws_url(server, "story"), additional_headers=key,
                               origin="http://evil.example"):  # type: ignore[arg-type]
                pass
        assert cross_site.value.response.status_code == 403
        async with connect(ws_url(server, "story"), additional_headers=key) as ws:
            await ws.send("Brasil")
            assert "".join((await read_run(ws))[:-1]) == expected(emu)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.post("/story/text", json=INPUTS["story"])).status_code == 401
            response = await http.post("/story/text", json=INPUTS["story"],
                                       headers={"Authorization": "Bearer k1"})
            assert response.text == expected(emu)
            assert (await http.get("/ui/")).status_code == 401
            assert (await http.get("/ui/config")).status_code == 401
            assert (await http.get("/ui/", headers=key)).status_code == 200


def test_ws_without_keys_serves_only_loopback(emu):
    app = create_app(ServerSettings(_env_file=None), model=emulator_model(emu))  # type: ignore[call-arg]
    outside = TestClient(app, client=("203.0.113.9", 5000))
    with pytest.raises(WebSocketDenialResponse) as refused:
        with outside.websocket_connect("/story/ws"):
            pass
    assert refused.value.status_code == 403
    assert "MARITACA_CHAINS_API_KEYS" in refused.value.text
    with TestClient(app, client=("127.0.0.1", 5000)).websocket_connect("/story/ws") as ws:
        ws.send_text("Brasil")
        frames = []
        while not frames or frames[-1] != END:
            frames.append(ws.receive_text())
    assert "".join(frames[:-1]) == expected(emu)
