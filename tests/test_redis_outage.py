"""Redis goes away and comes back: every request that needs it gets a named 503, a
run's reader a named ``error`` event, and everything works again once it returns.

A real redis-server on a fixed free port is stopped and started again on the same
port (data not kept, as after a crash); two app instances behind real uvicorns share
it as two replicas would. Skips without /usr/bin/redis-server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from maritaca.local import free_port
from maritaca.testing import MaritacaEmulator, terminate
from maritaca_chains import create_app, metrics
from maritaca_chains.quotas import Quotas
from maritaca_chains.redis_outage import REDIS_DOWN
from maritaca_chains.settings import ServerSettings
from tests.child_servers import REDIS_SERVER, needs_redis, redis_cli, wait_until
from tests.conftest import RunningServer, emulator_model
from tests.test_runs import STORY, read_events, text_of

pytestmark = needs_redis


class Redis:
    """A redis-server that can be stopped and started again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.workdir), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        wait_until(lambda: redis_cli(self.port, "ping") == "PONG", "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=10)
            self.proc = None


@contextmanager
def replicas(redis: Redis, emu: MaritacaEmulator, count: int, **env: object
             ) -> Iterator[list[httpx.Client]]:
    with_ui_off = {"MARITACA_CHAINS_UI": False, "MARITACA_CHAINS_REDIS_URL": redis.url,
                   "MARITACA_CHAINS_RATE_LIMIT": "1000/minute", **env}
    servers = [RunningServer(create_app(ServerSettings(_env_file=None, **with_ui_off),  # type: ignore[arg-type]
                                        model=emulator_model(emu))) for _ in range(count)]
    clients: list[httpx.Client] = []
    try:
        for server in servers:
            server.__enter__()
            clients.append(httpx.Client(base_url=server.url, timeout=30))
        yield clients
    finally:
        for client in clients:
            client.close()
        for server in servers:
            if hasattr(server, "url"):
                server.__exit__(None, None, None)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def assert_redis_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["type"] == "redis_unavailable"
    assert "O Redis está fora de alcance" in response.json()["detail"]  # pt-BR by default
    assert "redis://" not in response.text


@pytest.mark.timeout(240)
def test_an_outage_is_named_and_everything_recovers_when_redis_returns(redis):
    with MaritacaEmulator(reply_tokens=300, token_delay=0.02) as emu, \
            replicas(redis, emu, 2) as (a, b):
        started = a.post("/story/runs", json=STORY)
        assert started.status_code == 201
        run = started.json()
        # a reader follows the run live while Redis goes away
        events: list = []
        reader = threading.Thread(target=lambda: events.extend(
            read_events(a, run["stream_url"])), daemon=True)
        reader.start()
        time.sleep(0.5)
        redis.stop()
        reader.join(30)
        assert not reader.is_alive(), "the reader was left hanging"
        error = json.loads(events[-1][2])
        assert events[-1][1] == "error" and error["type"] == "redis_unavailable", events[-3:]
        assert error["status_code"] == 503

        # every request that needs Redis: a named 503, never a 500
        assert_redis_503(a.post("/story/invoke", json=STORY))
        assert_redis_503(a.post("/story/runs", json=STORY))
        assert_redis_503(b.get(f"/story/runs/{run['run_id']}"))
        assert_redis_503(b.delete(f"/story/runs/{run['run_id']}"))
        with pytest.raises(InvalidStatus) as refused:
            connect(str(a.base_url).replace("http://", "ws://").rstrip("/") + "/story/ws",
                    open_timeout=30).close()
        assert refused.value.response.status_code == 503
        assert "O Redis está fora de alcance".encode() in refused.value.response.body

        redis.start()  # empty, as after a crash
        # the first run after the restart works, start to end
        fresh = a.post("/story/runs", json=STORY)
        assert fresh.status_code == 201, fresh.text
        read = read_events(a, fresh.json()["stream_url"])
        assert [kind for _, kind, _ in read][-1] == "end", read[-2:]
        assert text_of(read) == emu.expected_text(emu.requests[-1].body["messages"])

        # and a DELETE served by the other replica reaches the one running it: its
        # cancellation channel was subscribed again by itself
        long = a.post("/story/runs", json=STORY).json()
        deadline = time.monotonic() + 10
        while a.get(long["status_url"]).json()["events"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        cancelled = b.delete(long["status_url"])
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


@pytest.mark.timeout(120)
def test_quotas_fail_open_serve_through_an_outage_and_count_it(redis):
    with MaritacaEmulator(reply_tokens=5) as emu, \
            replicas(redis, emu, 1, MARITACA_CHAINS_REDIS_FAIL_OPEN=True) as (a,):
        assert a.post("/story/invoke", json=STORY).status_code == 200
        redis.stop()
        served = a.post("/story/invoke", json=STORY)
        assert served.status_code == 200, served.text
        metrics = a.get("/metrics").text
        line = next(m for m in metrics.splitlines()
                    if m.startswith('maritaca_chains_redis_unavailable_total{outcome="served"}'))
        assert float(line.split()[-1]) >= 1
        # runs still need Redis: fail-open is for quotas only
        assert_redis_503(a.post("/story/runs", json=STORY))



def _sample(name: str, **labels: str) -> float:
    return metrics.registry().get_sample_value(name, labels) or 0.0


def _run_tokens() -> float:
    return sum(_sample("maritaca_chains_tokens_total", chain="story", model="sabia-4",
                       kind=kind) for kind in ("input", "output"))


@pytest.mark.timeout(180)
def test_tokens_a_run_spent_while_redis_was_down_are_charged_when_it_returns(redis):
    owed, settled = (_sample("maritaca_chains_unpaid_tokens_total", outcome=o)
                     for o in ("owed", "settled"))
    tokens_before = _run_tokens()
    with MaritacaEmulator(reply_tokens=60, token_delay=0.05) as emu, \
            replicas(redis, emu, 1, MARITACA_CHAINS_TOKEN_BUDGET="100000/hour") as (a,):
        answer: dict[str, httpx.Response] = {}
        running = threading.Thread(target=lambda: answer.update(
            done=a.post("/story/invoke", json=STORY)), daemon=True)
        running.start()  # admitted while Redis is up...
        wait_until(lambda: len(emu.requests) == 1, "the run's model call")
        redis.stop()  # ...and it ends while Redis is down
        running.join(60)
        assert answer["done"].status_code == 200, answer["done"].text
        spent = _run_tokens() - tokens_before
        assert spent > 60
        # not lost: owed, in this process
        assert _sample("maritaca_chains_unpaid_tokens_total", outcome="owed") - owed == spent
        assert _sample("maritaca_chains_unpaid_tokens_pending") >= spent

        redis.start()  # empty, as after a crash: the run's tokens must come back in
        wait_until(lambda: _sample("maritaca_chains_unpaid_tokens_total", outcome="settled")
                   - settled == spent, "the owed tokens' payment", timeout=30)
        keys = redis_cli(redis.port, "--scan", "--pattern", "maritaca_chains:quota*tokens*")
        assert len(keys.split()) == 1, keys
        assert int(redis_cli(redis.port, "get", keys)) == spent  # the key's usage
        assert _sample("maritaca_chains_unpaid_tokens_pending") == 0


def test_a_charge_that_is_never_paid_is_dropped_out_loud(caplog):
    """Past its bound, or still owed at shutdown with Redis away: logged and counted."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    quotas = Quotas.from_settings(ServerSettings(  # type: ignore[call-arg]
        _env_file=None, MARITACA_CHAINS_REDIS_URL=nowhere,
        MARITACA_CHAINS_TOKEN_BUDGET="1000/hour"))
    assert quotas is not None
    quotas.unpaid.max_owed = 1
    dropped = _sample("maritaca_chains_unpaid_tokens_total", outcome="dropped")

    async def outage() -> None:
        await quotas.spend("key-aaaa0001", 7)  # owed
        await quotas.spend("key-aaaa0002", 5)  # past the bound
        assert quotas.unpaid.pending_tokens == 7
        with pytest.raises(REDIS_DOWN):
            await quotas.admit("key-aaaa0001")
        await quotas.aclose()  # Redis is still away: the 7 go too

    with caplog.at_level(logging.WARNING, "maritaca_chains.server"):
        asyncio.run(outage())
    assert quotas.unpaid.pending_tokens == 0
    assert _sample("maritaca_chains_unpaid_tokens_total", outcome="dropped") - dropped == 12
    said = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert any("5 tokens for key-aaaa0002" in m and "bound" in m for m in said), said
    assert any("7 tokens for key-aaaa0001" in m and "stopping" in m for m in said), said
    assert nowhere not in caplog.text
