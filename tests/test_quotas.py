"""Per-key quotas on every face, against the emulator (whose usage numbers are known)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from maritaca.testing import MaritacaEmulator, Scenario
from maritaca_chains import create_app
from maritaca_chains.quotas import parse_quota
from maritaca_chains.security import key_label as label_of_key
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model, wait_disconnected

ALPHA, BETA, GAMMA = "alpha-key-0001", "beta-key-0002", "gamma-key-0003"
STORY = {"input": {"topic": "Brasil"}}


def make_app(emu: MaritacaEmulator, **quota: str):
    settings = ServerSettings(_env_file=None,  # type: ignore[call-arg]
                              MARITACA_CHAINS_API_KEYS=f"{ALPHA},{BETA},{GAMMA}", **quota)
    return create_app(settings, model=emulator_model(emu))


def as_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def client_for(app) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30)


def assert_refused(response: httpx.Response, what: str, window: int = 60) -> None:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window
    detail = response.json()["detail"]
    if detail.startswith(("Rate limit", "Token budget")):  # asked for in English
        assert "resets at" in detail and f"in {retry_after} s" in detail
    else:
        assert "se renova em" in detail and f"daqui a {retry_after} s" in detail
    assert detail.startswith(what)


@pytest.mark.parametrize(("text", "default", "alpha"), [
    ("60/minute", ["60 per 1 minute"], None),
    ("60/minute, *0001=600/minute", ["60 per 1 minute"], ["600 per 1 minute"]),
    ("*0001=none, 10/second;100/minute", ["10 per 1 second", "100 per 1 minute"], []),
    ("", [], None),
])
def test_quota_syntax_default_and_per_key(text, default, alpha):
    items, per_key = parse_quota(text, [ALPHA, BETA])
    assert [str(i) for i in items] == default
    assert ([str(i) for i in per_key[ALPHA]] if ALPHA in per_key else None) == alpha


@pytest.mark.parametrize("text", ["lots", "*0001=fast", "*key-=5/minute", "*001=5/minute",
                                  "*zzzz=5/minute"])
def test_quota_syntax_errors_say_what_is_wrong(text):
    with pytest.raises(ValueError, match="quota entry"):
        parse_quota(text, [ALPHA, BETA])


async def test_rate_limit_refuses_on_every_face_before_any_upstream_call(emu):
    app = make_app(emu, MARITACA_CHAINS_RATE_LIMIT="2/minute, *0003=none")
    with RunningServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            assert (await http.post("/story/invoke", json=STORY,
                                    headers=as_key(ALPHA))).status_code == 200
            assert (await http.post("/story/text", json=STORY,
                                    headers=as_key(ALPHA))).status_code == 200
            upstream = len(emu.requests)
            # schemas and pages are not runs: never counted, never refused
            assert (await http.get("/story/input_schema", headers=as_key(ALPHA))).status_code == 200
            for path in ("/story/invoke", "/story/stream", "/story/stream_events",
                         "/story/batch", "/story/text", "/story/runs"):
                body = {"inputs": [STORY["input"]]} if path.endswith("batch") else STORY
                assert_refused(await http.post(path, json=body, headers=as_key(ALPHA)),
                               "Limite de pedidos desta chave de acesso (2 por minuto)")
            # in English for a client that asks for it
            assert_refused(await http.post("/story/invoke", json=STORY, headers={
                **as_key(ALPHA), "Accept-Language": "en-US,en;q=0.9"}),
                "Rate limit of 2 per 1 minute for this access key reached")
            # the UI's own calls are not runs: its runs are refused where they start, on
            # the page (tests/test_browser_ui.py)
            assert (await http.post("/ui/gradio_api/queue/join", json={},
                                    headers=as_key(ALPHA))).status_code != 429
            refused_ai_sdk = await http.post("/story/ai-sdk", headers=as_key(ALPHA), json={
                "id": "c1", "messages": [{"role": "user", "parts": [
                    {"type": "text", "text": "Brasil"}]}]})
            assert_refused(refused_ai_sdk, "Limite de pedidos desta chave de acesso (2 por minuto)")
            refused_v1 = await http.post("/v1/chat/completions", headers=as_key(ALPHA), json={
                "model": "story", "messages": [{"role": "user", "content": "Brasil"}]})
            assert refused_v1.status_code == 429 and int(refused_v1.headers["retry-after"]) >= 1
            assert refused_v1.json()["error"]["message"].startswith("Limite de pedidos desta chave de acesso (2 por minuto)")
            with pytest.raises(InvalidStatus) as refused:
                async with connect(server.url.replace("http", "ws") + "/story/ws",
                                   additional_headers=as_key(ALPHA)):
                    pass
            response = refused.value.response
            assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
            assert b"Limite de pedidos desta chave de acesso (2 por minuto)" in response.body
            assert len(emu.requests) == upstream  # refused before any upstream call
            # the limit is per key; the exempted key has none
            assert (await http.post("/story/invoke", json=STORY,
                                    headers=as_key(BETA))).status_code == 200
            for _ in range(4):
                assert (await http.post("/story/invoke", json=STORY,
                                        headers=as_key(GAMMA))).status_code == 200


async def _model_usage(http: httpx.AsyncClient, key: str) -> int:
    """input + output tokens of one story run, as the model reported them."""
    response = await http.post("/story/stream_events", json=STORY, headers=as_key(key))
    assert response.status_code == 200
    for block in response.text.split("\r\n\r\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "data" and '"on_chat_model_end"' in lines.get("data", ""):
            usage = json.loads(lines["data"])["data"]["output"]["usage_metadata"]
            return usage["input_tokens"] + usage["output_tokens"]
    raise AssertionError("no on_chat_model_end event")


@pytest.mark.parametrize("face", ["stream", "stream_events"])
async def test_requests_stream_route_hands_to_langserve_are_guarded_once(emu, face):
    """The requests our /stream and /stream_events hand to LangServe's own handler (a
    body with a config, an input that does not validate) are refused without a key and
    counted once each, like the ones they answer themselves."""
    app = make_app(emu, MARITACA_CHAINS_RATE_LIMIT="3/minute")
    bodies = [{**STORY, "config": {"configurable": {"temperature": 0.2}}},
              {"input": {"topico": "Brasil"}}, STORY]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t", timeout=30) as http:
        for body in bodies:
            assert (await http.post(f"/story/{face}", json=body)).status_code == 401
        statuses = [(await http.post(f"/story/{face}", json=body, headers=as_key(ALPHA))
                     ).status_code for body in bodies]
        assert statuses == [200, 422, 200]
        assert_refused(await http.post(f"/story/{face}", json=STORY, headers=as_key(ALPHA)),
                       "Limite de pedidos desta chave de acesso (3 por minuto)")


async def test_a_request_refused_by_one_limit_spends_nothing_of_the_others(emu):
    """With two limits, a burst refused by the shorter one leaves the longer one's
    requests for later: only the request that ran counts."""
    app = make_app(emu, MARITACA_CHAINS_RATE_LIMIT="2/minute;1/second")
    async with client_for(app) as http:
        burst = [(await http.post("/story/invoke", json=STORY, headers=as_key(ALPHA)))
                 for _ in range(3)]
        assert [r.status_code for r in burst] == [200, 429, 429]
        await asyncio.sleep(1.1)  # the second's window passes; the minute's has room for one
        assert (await http.post("/story/invoke", json=STORY,
                                headers=as_key(ALPHA))).status_code == 200
        assert_refused(await http.post("/story/invoke", json=STORY, headers=as_key(ALPHA)),
                       "Limite de pedidos")


async def test_token_budget_counts_the_reported_usage_then_refuses(emu):
    app = make_app(emu, MARITACA_CHAINS_TOKEN_BUDGET="100000/day, *0002=10/hour")
    async with client_for(app) as http:
        used = await _model_usage(http, ALPHA)
        assert used > 10
        left = await app.state.quotas.remaining_tokens(label_of_key(ALPHA))
        assert left == 100000 - used
        # beta's budget is 10/hour: the first run may start, and spends past it
        assert (await http.post("/story/text", json=STORY,
                                headers=as_key(BETA))).status_code == 200
        upstream = len(emu.requests)
        assert_refused(await http.post("/story/stream", json=STORY, headers=as_key(BETA)),
                       "Orçamento de tokens desta chave de acesso (10 por hora, entrada + saída)", 3600)
        assert len(emu.requests) == upstream
        assert await app.state.quotas.remaining_tokens(label_of_key(BETA)) == 0


@pytest.mark.parametrize("scenario", [Scenario.drop(after_chunks=4),
                                      Scenario.error_event(after_chunks=4)])
async def test_token_budget_counts_a_run_that_failed_mid_stream(emu, scenario):
    app = make_app(emu, MARITACA_CHAINS_TOKEN_BUDGET="100000/day")
    emu.enqueue(scenario)
    async with client_for(app) as http:
        response = await http.post("/story/text", json=STORY, headers=as_key(ALPHA))
        assert "[ERROR]" in response.text  # it failed after text went out
    left = await app.state.quotas.remaining_tokens(label_of_key(ALPHA))
    assert left is not None and 100000 - left >= 4  # the chunks streamed, and the prompt


async def test_token_budget_counts_a_run_the_client_hung_up_on():
    # the chain streams directly (chains/_direct.py): the hang-up's cancellation reaches
    # the model's run, which reports its error, and the meter charges what was streamed
    with MaritacaEmulator(reply_tokens=400, token_delay=0.01) as emu:
        app = make_app(emu, MARITACA_CHAINS_TOKEN_BUDGET="100000/day")
        with RunningServer(app) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                async with http.stream("POST", "/story/stream", json=STORY,
                                       headers=as_key(ALPHA)) as response:
                    seen = 0
                    async for line in response.aiter_lines():
                        seen += line.startswith("event: data")
                        if seen >= 10:
                            break
                hung_up = time.monotonic()
            await asyncio.to_thread(wait_disconnected, emu.requests[-1], hung_up)
            label = label_of_key(ALPHA)
            for _ in range(250):  # the cancelled run charges as it unwinds
                if (left := await app.state.quotas.remaining_tokens(label)) != 100000:
                    break
                await asyncio.sleep(0.02)
    assert left is not None and 100000 - left >= 10


async def test_websocket_runs_charge_the_key(emu):
    app = make_app(emu, MARITACA_CHAINS_TOKEN_BUDGET="100000/day")
    with RunningServer(app) as server:
        async with connect(server.url.replace("http", "ws") + "/story/ws",
                           additional_headers=as_key(ALPHA)) as ws:
            for _ in range(2):
                await ws.send("Brasil")
                while await ws.recv() != "[END]":
                    pass
        left = await app.state.quotas.remaining_tokens(label_of_key(ALPHA))
    async with client_for(make_app(emu, MARITACA_CHAINS_TOKEN_BUDGET="100000/day")) as http:
        one_run = await _model_usage(http, ALPHA)
    assert left == 100000 - 2 * one_run


async def test_no_quota_settings_no_quotas(emu):
    app = make_app(emu)
    assert app.state.quotas is None
    async with client_for(app) as http:
        for _ in range(3):
            assert (await http.post("/story/invoke", json=STORY,
                                    headers=as_key(ALPHA))).status_code == 200


# ------------------------------------------------- every face, through the run ledger


def run_log(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records
            if r.name == "maritaca_chains.runs" and r.getMessage().startswith('{"event": "run"')]


def runs_counted(metrics: str) -> float:
    """``maritaca_chains_runs_total`` of story's ok runs (the registry is the process's)."""
    mark = 'maritaca_chains_runs_total{chain="story",model="sabia-4",outcome="ok"} '
    return float(next(line for line in metrics.splitlines() if line.startswith(mark))
                 .removeprefix(mark))


def chat_calls(emu: MaritacaEmulator) -> int:
    return sum(r.path.endswith("/chat/completions") for r in emu.requests)


async def test_resumable_runs_spend_the_budget_and_are_logged_and_counted(emu, caplog):
    """The attack: with a 300-token budget, start runs with POST /story/runs and read
    them to the end, again and again. Each is charged, logged and counted; once the
    budget is spent the next start is a 429 before any upstream call."""
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    app = make_app(emu, MARITACA_CHAINS_TOKEN_BUDGET="300/hour")
    label = label_of_key(ALPHA)
    started = 0
    with RunningServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     headers=as_key(ALPHA)) as http:
            before = runs_counted((await http.get("/metrics")).text)
            for _ in range(8):
                response = await http.post("/story/runs", json=STORY)
                if response.status_code == 429:
                    break
                assert response.status_code == 201, response.text
                started += 1
                status_url = response.json()["status_url"]
                while (status := (await http.get(status_url)).json())["status"] == "running":  # noqa: ASYNC110
                    await asyncio.sleep(0.02)  # polling the server
                assert status["status"] == "done"
            assert_refused(response, "Orçamento de tokens desta chave de acesso (300 por hora, entrada + saída)", 3600)
            after = runs_counted((await http.get("/metrics")).text)
    one_run = status["usage"]["input_tokens"] + status["usage"]["output_tokens"]
    assert status["usage"]["total_tokens"] == one_run and status["usage"]["cost_brl"] > 0
    assert started == -(-300 // one_run)  # runs until the budget was spent, no more
    assert chat_calls(emu) == started
    assert await app.state.quotas.remaining_tokens(label) == 0
    lines = run_log(caplog)
    assert [(line["chain"], line["key"], line["outcome"]) for line in lines] == [
        ("story", label, "ok")] * started
    assert lines[-1]["input_tokens"] + lines[-1]["output_tokens"] == one_run
    assert after - before == started


async def test_every_websocket_run_is_a_request_checked_before_it_starts(emu):
    """The attack: one handshake, then many runs on the socket. Each run counts against
    the rate limit and is checked against the token budget before it starts."""
    app = make_app(emu, MARITACA_CHAINS_RATE_LIMIT="2/minute")
    with RunningServer(app) as server:
        async with connect(server.url.replace("http", "ws") + "/story/ws",
                           additional_headers=as_key(ALPHA)) as ws:
            frames = []
            for _ in range(4):
                await ws.send("Brasil")
                while (frame := await ws.recv()) != "[END]":
                    frames.append(frame)
    assert chat_calls(emu) == 2  # the handshake itself spends nothing
    errors = [json.loads(f.removeprefix("[ERROR] ")) for f in frames if f.startswith("[ERROR]")]
    assert len(errors) == 2
    assert all(e["type"] == "quota_exceeded" and e["status_code"] == 429
               and e["retry_after"] >= 1 and e["message"].startswith("Limite de pedidos desta chave de acesso (2 por minuto)")
               for e in errors)

    emu.reset()
    app = make_app(emu, MARITACA_CHAINS_TOKEN_BUDGET="10/hour")
    with RunningServer(app) as server:
        async with connect(server.url.replace("http", "ws") + "/story/ws",
                           additional_headers=as_key(ALPHA)) as ws:
            replies = []
            for _ in range(3):
                await ws.send("Brasil")
                reply = []
                while (frame := await ws.recv()) != "[END]":
                    reply.append(frame)
                replies.append(reply)
    assert chat_calls(emu) == 1  # the first run spent the budget; the others never started
    assert not any(f.startswith("[ERROR]") for f in replies[0])
    for reply in replies[1:]:
        [frame] = reply
        assert json.loads(frame.removeprefix("[ERROR] "))["type"] == "quota_exceeded"
        assert "Orçamento de tokens" in frame


async def test_a_batch_is_a_request_per_input_and_has_a_size_cap(emu, caplog):
    """The attack: one POST /story/batch with many inputs. Each input is a run (one
    request each, each charged and logged); beyond the cap it is a 413, before any
    upstream call."""
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    app = make_app(emu, MARITACA_CHAINS_RATE_LIMIT="3/minute",
                   MARITACA_CHAINS_TOKEN_BUDGET="100000/day", MARITACA_CHAINS_BATCH_MAX_INPUTS="5")
    inputs = [STORY["input"]] * 6
    async with client_for(app) as http:
        too_many = await http.post("/story/batch", json={"inputs": inputs}, headers=as_key(ALPHA))
        assert too_many.status_code == 413, too_many.text
        assert "at most 5 inputs" in too_many.json()["detail"]
        assert_refused(await http.post("/story/batch", json={"inputs": inputs[:4]},
                                       headers=as_key(ALPHA)), "Limite de pedidos desta chave de acesso (3 por minuto)")
        assert chat_calls(emu) == 0
        two = await http.post("/story/batch", json={"inputs": inputs[:2]}, headers=as_key(ALPHA))
        assert two.status_code == 200 and len(two.json()["output"]) == 2
        assert (await http.post("/story/invoke", json=STORY,
                                headers=as_key(ALPHA))).status_code == 200
        assert_refused(await http.post("/story/invoke", json=STORY, headers=as_key(ALPHA)),
                       "Limite de pedidos desta chave de acesso (3 por minuto)")
    assert chat_calls(emu) == 3
    lines = run_log(caplog)
    assert len(lines) == 3 and len({line["run_id"] for line in lines}) == 3
    spent = sum(line["input_tokens"] + line["output_tokens"] for line in lines)
    assert await app.state.quotas.remaining_tokens(label_of_key(ALPHA)) == 100000 - spent


@pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # pandas deprecations
async def test_ui_runs_charge_the_key_that_started_them(emu, caplog, monkeypatch):
    """Gradio runs each chat in its own queue worker, outside the request that started
    it: the run's ledger still charges (and logs) the key of that request."""
    from gradio_client import Client

    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    app = make_app(emu, MARITACA_CHAINS_TOKEN_BUDGET="100000/day")
    with RunningServer(app) as server:
        client = Client(f"{server.url}/ui/", verbose=False, analytics_enabled=False,
                        headers=as_key(BETA))
        try:
            await asyncio.to_thread(client.predict, [], "sabia-4", 0.7, 0, "Brasil", "",
                                    "curta", api_name="/story")
        finally:
            client.close()
        left = await app.state.quotas.remaining_tokens(label_of_key(BETA))
    [line] = run_log(caplog)
    assert line["key"] == label_of_key(BETA) and line["outcome"] == "ok"
    assert left == 100000 - line["input_tokens"] - line["output_tokens"]
async def test_background_runs_charge_the_key_that_started_them(emu):
    """A resumable run (and so an AI SDK answer) runs outside the request's context: its
    tokens still go to the key's budget."""
    app = make_app(emu, MARITACA_CHAINS_TOKEN_BUDGET="50/minute")
    with RunningServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            started = await http.post("/story/runs", json=STORY, headers=as_key(ALPHA))
            assert started.status_code == 201
            done = await http.get(started.json()["stream_url"], headers=as_key(ALPHA))
            assert "event: end" in done.text  # 87 tokens spent, past the budget
            assert_refused(await http.post("/story/runs", json=STORY, headers=as_key(ALPHA)),
                           "Orçamento de tokens")
            body = {"id": "c", "messages": [{"role": "user", "parts": [
                {"type": "text", "text": "Brasil"}]}]}
            assert_refused(await http.post("/story/ai-sdk", json=body, headers=as_key(ALPHA)),
                           "Orçamento de tokens")
            assert (await http.post("/story/ai-sdk", json=body,
                                    headers=as_key(BETA))).status_code == 200


@pytest.mark.parametrize(("text", "portuguese"), [
    ("60/minute", "60 por minuto"), ("5/30 seconds", "5 a cada 30 segundos"),
    ("1000/day", "1000 por dia"), ("3/2 months", "3 a cada 2 meses")])
def test_a_limit_reads_in_portuguese(text, portuguese):
    from limits import parse

    from maritaca_chains.quota_exceeded import QuotaExceeded

    refused = QuotaExceeded("requests", parse(text), time.time() + 30)
    assert refused.message().startswith(
        f"Limite de pedidos desta chave de acesso ({portuguese}) atingido")
    assert refused.message("en").startswith(f"Rate limit of {parse(text)} for this access key")
