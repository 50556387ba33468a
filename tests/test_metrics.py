"""Every run recorded: one JSON log line (maritaca_chains.runs) and the Prometheus metrics
at /metrics, on LangServe's routes and the faces, map-reduce included, and under
``--workers 2`` (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chains import build_summarize_chain
from maritaca.testing import MaritacaEmulator, Scenario
from maritaca_chains import create_app
from maritaca_chains.ledger import RunAccounts, format_brl
from maritaca_chains.settings import ServerSettings
from tests.child_servers import serve
from tests.conftest import emulator_model

STORY = {"input": {"topic": "Brasil"}}
SABIA_4 = (5.00, 20.00, 1.25)  # BRL per million: input, output, cached input


def brl(input_tokens: int, output_tokens: int, cached: int, prices: tuple[float, ...] = SABIA_4
        ) -> float:
    fresh, out, cached_price = prices
    return round(((input_tokens - cached) * fresh + cached * cached_price
                  + output_tokens * out) / 1e6, 8)


def app_with(emu: MaritacaEmulator, **settings: Any) -> Any:
    settings.setdefault("ui", False)  # not what these tests are about, and slow to build
    return create_app(ServerSettings(_env_file=None, **settings),  # type: ignore[call-arg]
                      model=emulator_model(emu))


def client_of(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=30,
                             base_url="http://testserver")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: httpx.AsyncClient, **headers: str) -> dict[Any, float]:
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return samples(response.text)


def run_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    lines = []
    for record in caplog.records:
        if record.name == "maritaca_chains.runs" and record.getMessage().startswith("{"):
            line = json.loads(record.getMessage())
            if line.get("event") == "run":
                lines.append(line)
    return lines


def sse_data(body: str, event: str) -> list[Any]:
    out = []
    for block in body.replace("\r\n", "\n").strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if fields.get("event") == event:
            out.append(json.loads(fields["data"]))
    return out


# ------------------------------------------------------------------ LangServe routes


async def test_stream_events_show_cost_and_the_run_is_logged_and_counted(emu, caplog):
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    async with client_of(app_with(emu)) as http:
        before = await scrape(http)
        response = await http.post("/story/stream_events", json=STORY)
        assert response.status_code == 200
        after = await scrape(http)
    ends = [e for e in sse_data(response.text, "data") if e["event"] == "on_chat_model_end"]
    assert len(ends) == 1
    output = ends[0]["data"]["output"]
    usage, metadata = output["usage_metadata"], output["response_metadata"]
    assert usage["output_tokens"] == 12 and usage["input_tokens"] > 10
    cached = usage.get("input_token_details", {}).get("cache_read", 0)
    assert metadata["cost_brl"]["total"] == brl(usage["input_tokens"], 12, cached)

    [line] = run_lines(caplog)
    assert {k: line[k] for k in ("chain", "model", "backend", "key", "outcome", "input_tokens",
                                 "output_tokens", "cached_input_tokens", "calls", "cost_brl")
            } == {"chain": "story", "model": "sabia-4", "backend": "custom", "key": "none",
                  "outcome": "ok", "input_tokens": usage["input_tokens"], "output_tokens": 12,
                  "cached_input_tokens": cached, "calls": 1,
                  "cost_brl": metadata["cost_brl"]["total"]}
    assert 0 < line["time_to_first_token_s"] <= line["duration_s"]
    assert len(line["run_id"]) == 36

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    story = {"chain": "story", "model": "sabia-4"}
    assert delta("maritaca_chains_runs_total", outcome="ok", **story) == 1
    assert delta("maritaca_chains_tokens_total", kind="output", **story) == 12
    assert delta("maritaca_chains_tokens_total", kind="input", **story) == usage["input_tokens"]
    assert delta("maritaca_chains_cost_brl_total", **story) == pytest.approx(line["cost_brl"])
    assert delta("maritaca_chains_time_to_first_token_seconds_count", **story) == 1
    assert delta("maritaca_chains_run_duration_seconds_count", **story) == 1
    assert value(after, "maritaca_chains_streams_active", chain="story") == 0


async def test_stream_and_invoke_are_recorded_and_a_failure_is_named(emu, caplog):
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    async with client_of(app_with(emu)) as http:
        before = await scrape(http)
        assert (await http.post("/story/stream", json=STORY)).status_code == 200
        assert (await http.post("/story/invoke", json=STORY)).status_code == 200
        emu.enqueue(Scenario.server_error(503))
        failed = await http.post("/story/invoke", json=STORY)
        assert failed.status_code == 502
        after = await scrape(http)
    lines = run_lines(caplog)
    assert [line["outcome"] for line in lines] == ["ok", "ok", "upstream_error"]
    assert lines[0]["time_to_first_token_s"] is not None
    assert lines[2]["calls"] == 0 and lines[2]["cost_brl"] is None
    story = {"chain": "story", "model": "sabia-4"}
    assert value(after, "maritaca_chains_runs_total", outcome="ok", **story) - value(
        before, "maritaca_chains_runs_total", outcome="ok", **story) == 2
    assert value(after, "maritaca_chains_upstream_errors_total", type="upstream_error") - value(
        before, "maritaca_chains_upstream_errors_total", type="upstream_error") == 1


async def test_a_client_that_hangs_up_is_a_cancelled_run(caplog):
    from tests.conftest import RunningServer

    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    with MaritacaEmulator(reply_tokens=400, token_delay=0.01) as emu:
        with RunningServer(app_with(emu)) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
                async with http.stream("POST", "/story/stream", json=STORY) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            break  # the first chunk: hang up
                for _ in range(100):  # the server notices the hang-up on its next send
                    if run_lines(caplog):
                        break
                    await asyncio.sleep(0.05)  # noqa: ASYNC110 - polling a log, not an event
                scraped = await scrape(http)
    [line] = run_lines(caplog)
    assert line["outcome"] == "cancelled" and line["time_to_first_token_s"] is not None
    assert value(scraped, "maritaca_chains_streams_active", chain="story") == 0


async def test_unknown_model_is_logged_without_a_price(caplog):
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    with MaritacaEmulator(reply_tokens=5) as emu:
        app = create_app(ServerSettings(_env_file=None, ui=False),  # type: ignore[call-arg]
                         model=emulator_model(emu, model="modelo-sem-preco"))
        async with client_of(app) as http:
            assert (await http.post("/story/stream", json=STORY)).status_code == 200
    [line] = run_lines(caplog)
    assert line["model"] == "modelo-sem-preco" and line["output_tokens"] == 5
    assert line["cost_brl"] is None


# -------------------------------------------------------------- access to /metrics


async def test_metrics_need_a_key_unless_the_scraper_address_is_allowed(emu, caplog):
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    async with client_of(app_with(emu, access_keys="chave-um,chave-dois")) as http:
        assert (await http.get("/metrics")).status_code == 401
        await scrape(http, **{"X-API-Key": "chave-dois"})
        response = await http.post("/story/stream", json=STORY,
                                   headers={"Authorization": "Bearer chave-dois"})
        assert response.status_code == 200
    [line] = run_lines(caplog)
    assert line["key"] == "key-" + hashlib.sha256(b"chave-dois").hexdigest()[:8]
    assert "chave" not in json.dumps(line)
    # the ASGI test client connects from 127.0.0.1
    async with client_of(app_with(emu, access_keys="k", metrics_allow="10.0.0.0/8")) as http:
        assert (await http.get("/metrics")).status_code == 401
    async with client_of(app_with(emu, access_keys="k", metrics_allow="127.0.0.1/32")) as http:
        await scrape(http)


async def test_switched_off_nothing_is_counted_or_served(emu, caplog):
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    app = app_with(emu, metrics=False, run_log=False)
    async with client_of(app) as http:
        assert (await http.get("/metrics")).status_code == 404
        assert (await http.post("/story/stream", json=STORY)).status_code == 200
    assert run_lines(caplog) == []
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        ServerSettings(_env_file=None, metrics_allow="not-a-network")  # type: ignore[call-arg]


# ------------------------------------------------------------------------ map-reduce

LONG_TEXT = " ".join(f"Parágrafo {i}: o sabiá canta no alto da palmeira ao amanhecer."
                     for i in range(60))


async def test_map_reduce_cost_adds_up_every_call(emu, caplog):
    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    accounts = RunAccounts(backend="maritaca", model="sabia-4", quotas=None)
    chain = build_summarize_chain(emulator_model(emu), context_tokens=3_000)
    ledger = accounts.open(None, "summarize")
    text = "".join([c async for c in chain.astream({"text": LONG_TEXT}, ledger.config())])
    assert text
    calls = emu.requests
    assert len(calls) >= 4  # three parts or more, then the summary of their summaries
    [line] = run_lines(caplog)
    assert line["calls"] == len(calls)
    # the emulator's rule: whitespace words + 3 tokens per message
    assert line["input_tokens"] == sum(len(m["content"].split()) + 3
                                       for r in calls for m in r.body["messages"])
    assert all(r.body["max_tokens"] >= 12 for r in calls)
    assert line["output_tokens"] == 12 * len(calls)
    assert line["cost_brl"] == pytest.approx(
        brl(line["input_tokens"], line["output_tokens"], line["cached_input_tokens"]), abs=1e-8)
    assert format_brl(line["cost_brl"]).startswith("R$ 0,")
    [run] = ledger.runs  # what the log line says is the ledger's
    assert run.usage()["cost_brl"] == line["cost_brl"] and run.calls == len(calls)


# ------------------------------------------------------- --workers 2, multiprocess mode


def test_two_workers_share_one_metrics_view(emu, tmp_path):
    """The CLI makes the multiprocess directory, every worker writes there, /metrics adds
    them up, and the directory goes when the server stops."""
    env = {**os.environ, "MARITACA_BACKEND": "maritaca", "MARITACA_API_KEY": emu.api_key or "k",
           "MARITACA_BASE_URL": emu.base_url, "MARITACA_CHAINS_UI": "false",
           "MARITACA_CHAINS_LOG_LEVEL": "warning"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # two workers import the stack at once: slow on a busy machine
    with serve(env, "--workers", "2", cwd=tmp_path, log=tmp_path / "server.log",
               timeout=180) as (base, proc):
        workers = [child for child in psutil.Process(proc.pid).children()  # not the
                   if "spawn_main" in " ".join(child.cmdline())]  # resource tracker
        assert len(workers) == 2
        [directory] = {w.environ()["PROMETHEUS_MULTIPROC_DIR"] for w in workers}
        runs = 0
        pids: set[str] = set()
        # new connections until both workers served some (the kernel picks the worker)
        while runs < 12 or (len(pids) < 2 and runs < 300):
            with httpx.Client(base_url=base, timeout=30) as http:
                assert http.post("/story/invoke", json=STORY).status_code == 200
            runs += 1
            pids = {f.split("_")[-1] for f in os.listdir(directory)
                    if f.startswith("counter_")}
        scraped = samples(httpx.get(f"{base}/metrics", timeout=10).text)
        assert value(scraped, "maritaca_chains_runs_total", chain="story", model="sabia-4",
                     outcome="ok") == runs
        assert value(scraped, "maritaca_chains_tokens_total", chain="story", model="sabia-4",
                     kind="output") == 12 * runs
        assert value(scraped, "maritaca_chains_streams_active", chain="story") == 0
        assert len(pids) == 2, f"both workers should have served runs: {pids}"
    assert not os.path.exists(directory)


# ----------------------------------------------------------------------- the faces


async def test_text_and_websocket_runs_are_recorded(emu, caplog):
    import websockets

    from tests.conftest import RunningServer

    caplog.set_level(logging.INFO, logger="maritaca_chains.runs")
    app = app_with(emu, access_keys="chave-face")
    with RunningServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     headers={"X-API-Key": "chave-face"}) as http:
            response = await http.post("/story/text", json=STORY)
            assert response.status_code == 200 and response.text
        async with websockets.connect(server.url.replace("http", "ws") + "/story/ws",
                                      additional_headers={"X-API-Key": "chave-face"}) as ws:
            await ws.send("Brasil")
            while await ws.recv() != "[END]":
                pass
    lines = run_lines(caplog)
    assert [(line["chain"], line["outcome"], line["output_tokens"], line["calls"])
            for line in lines] == [("story", "ok", 12, 1)] * 2
    assert {line["key"] for line in lines} == {
        "key-" + hashlib.sha256(b"chave-face").hexdigest()[:8]}
    assert all(line["cost_brl"] and line["time_to_first_token_s"] for line in lines)


# ------------------------------------------------------------------------- at start


async def test_a_fresh_server_shows_zeros_and_process_metrics(emu):
    """Dashboards see 0, not "no data": every chain's in-flight gauge and its ok runs
    exist before any run; the process' own metrics (memory, CPU, descriptors) too."""
    from tests.conftest import RunningServer

    with RunningServer(app_with(emu)) as server:  # a real single-process server
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            scraped = await scrape(http)
    for chain in ("story", "qa", "summarize"):
        assert ("maritaca_chains_streams_active", frozenset({("chain", chain)})) in scraped
        assert value(scraped, "maritaca_chains_streams_active", chain=chain) == 0
        key = ("maritaca_chains_runs_total",
               frozenset({("chain", chain), ("model", "sabia-4"), ("outcome", "ok")}))
        assert key in scraped
    assert not emu.requests
    names = {name for name, _ in scraped}
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                 "process_open_fds", "process_start_time_seconds"):
        assert name in names, name
    assert scraped[("process_resident_memory_bytes", frozenset())] > 10 * 2**20
