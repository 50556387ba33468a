"""Resumable runs shared through a real redis-server by two real server processes:
a run started on one replica is resumed, read, cancelled and refused on the other.

The redis-server (Debian's) and both uvicorn servers listen on 127.0.0.1 at free ports
and are stopped by the module fixture; skips without /usr/bin/redis-server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import NamedTuple

import httpx
import pytest

from maritaca.testing import MaritacaEmulator, Scenario
from tests.child_servers import needs_redis, start_redis, start_replicas
from tests.conftest import wait_disconnected
from tests.test_runs import chat_requests, read_events, text_of

GRACE = 1.0

pytestmark = needs_redis


class Replicas(NamedTuple):
    emu: MaritacaEmulator
    redis_url: str
    a: httpx.Client
    b: httpx.Client


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    with start_redis(tmp_path_factory.mktemp("redis")) as port, \
            MaritacaEmulator(reply_tokens=60, token_delay=0.02) as emu:
        redis_url = f"redis://127.0.0.1:{port}/0"
        settings = {"MARITACA_CHAINS_API_KEYS": "k1,k2", "MARITACA_CHAINS_REDIS_URL": redis_url,
                    "MARITACA_CHAINS_RUN_GRACE_SECONDS": str(GRACE),
                    "MARITACA_CHAINS_RUN_TTL_SECONDS": "3",
                    "MARITACA_CHAINS_RUN_MAX_EVENTS": "100", "MARITACA_CHAINS_RUN_MAX_RUNS": "2",
                    # the global cap is what these tests fill (per-key shares: test_run_fairness)
                    "MARITACA_CHAINS_RUN_KEY_SHARE": "1"}
        with start_replicas(emu, **settings) as urls:
            key = {"X-API-Key": "k1"}
            with httpx.Client(base_url=urls[0], headers=key, timeout=20) as a, \
                    httpx.Client(base_url=urls[1], headers=key, timeout=20) as b:
                yield Replicas(emu, redis_url, a, b)


@pytest.fixture
def emu(replicas: Replicas) -> MaritacaEmulator:
    replicas.emu.reset()
    return replicas.emu


def start(http: httpx.Client, **kwargs: object) -> dict[str, str]:
    response = http.post("/story/runs", json={"input": {"topic": "Brasil"}}, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 201, response.text
    return response.json()


def wait_status(http: httpx.Client, url: str, status: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (now := http.get(url).json())["status"] != status:
        assert time.monotonic() < deadline, now
        time.sleep(0.02)


def test_a_run_started_on_one_replica_resumes_on_the_other(replicas, emu):
    a, b = replicas.a, replicas.b
    run = start(a)
    first = read_events(a, run["stream_url"], limit=10)
    rest = read_events(b, run["stream_url"], headers={"Last-Event-ID": "10"})
    events = first + rest
    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    assert events[0][1] == "metadata" and events[-1][1] == "end" and len(events) == 62
    requests = chat_requests(emu)
    assert len(requests) == 1
    assert text_of(events) == emu.expected_text(requests[0].body["messages"])
    status = b.get(run["status_url"]).json()
    assert status["status"] == "done" and status["events"] == 62
    assert status["usage"]["output_tokens"] == 60
    assert b.get(run["stream_url"], headers={"Last-Event-ID": "62"}).status_code == 204
    # several readers, on both replicas, read the finished run again
    assert read_events(a, run["stream_url"]) == read_events(b, run["stream_url"]) == events


def test_delete_on_one_replica_closes_the_upstream_opened_by_the_other(replicas, emu):
    emu.enqueue(Scenario.ok(reply_tokens=400))
    run = start(replicas.a)
    read_events(replicas.a, run["stream_url"], limit=5)
    since = time.monotonic()
    cancelled = replicas.b.delete(run["status_url"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_disconnected(chat_requests(emu)[0], since)
    events = read_events(replicas.b, run["stream_url"], headers={"Last-Event-ID": "5"})
    assert json.loads(events[-1][2] or "")["type"] == "cancelled"


def test_the_grace_counts_readers_on_any_replica(replicas, emu):
    emu.enqueue(Scenario.ok(reply_tokens=150))  # 3 s: longer than the grace
    run = start(replicas.a)
    events = read_events(replicas.b, run["stream_url"])  # the reader is on the other one
    assert events[-1][1] == "end" and len(events) == 152
    emu.enqueue(Scenario.ok(reply_tokens=400))
    run = start(replicas.a)
    started = time.monotonic()
    wait_status(replicas.b, run["status_url"], "cancelled")  # nobody reads it
    assert GRACE <= time.monotonic() - started < GRACE + 3
    wait_disconnected(chat_requests(emu)[-1], time.monotonic())


def test_expiry_other_keys_and_full_answers_across_replicas(replicas, emu):
    a, b = replicas.a, replicas.b
    emu.enqueue(Scenario.ok(reply_tokens=5))
    run = start(a)
    wait_status(b, run["status_url"], "done")
    other = {"X-API-Key": "k2"}
    assert b.get(run["status_url"], headers=other).status_code == 404
    assert b.get(run["stream_url"], headers=other).status_code == 404
    assert b.delete(run["status_url"], headers=other).status_code == 404
    assert b.get("/story/runs/nope").status_code == 404
    # the cap on runs in progress is shared: two on A leave no room on B
    emu.enqueue(Scenario.ok(reply_tokens=400), Scenario.ok(reply_tokens=400))
    long = [start(a), start(a)]
    refused = b.post("/story/runs", json={"input": {"topic": "Brasil"}})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    for one in long:
        b.delete(one["status_url"])
    # events beyond the per-run cap (100) are dropped oldest first
    emu.enqueue(Scenario.ok(reply_tokens=200))
    big = start(b)
    live = read_events(a, big["stream_url"])  # a reader that keeps up misses nothing
    assert [e[0] for e in live] == list(range(1, 203))
    dropped = read_events(a, big["stream_url"])
    assert dropped[0][1] == "error" and json.loads(dropped[0][2] or "")["status_code"] == 410
    tail = read_events(a, big["stream_url"], headers={"Last-Event-ID": "200"})
    assert [e[0] for e in tail] == [201, 202]
    # a finished run expires after the TTL (3 s), on every replica
    time.sleep(3.2)
    assert a.get(run["status_url"]).status_code == 404
    assert b.get(big["stream_url"]).status_code == 404


def test_an_ai_sdk_answer_dropped_on_one_replica_is_replayed_by_the_other(replicas, emu):
    body = {"id": "chat-redis", "trigger": "submit-message", "messages": [
        {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Brasil"}]}]}
    deltas = 0
    with replicas.a.stream("POST", "/story/ai-sdk", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            deltas += line.startswith('data: {"type":"text-delta"')
            if deltas == 3:
                break  # the connection drops; the answer goes on
    assert replicas.b.get("/story/ai-sdk/chat-redis/stream",
                          headers={"X-API-Key": "k2"}).status_code == 204  # not k2's chat
    resumed = replicas.b.get("/story/ai-sdk/chat-redis/stream")
    assert resumed.status_code == 200
    assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    parts = [json.loads(line[6:]) for line in resumed.text.splitlines()
             if line.startswith("data: {")]
    assert parts[0]["type"] == "start" and parts[-1]["type"] == "finish"
    text = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    requests = chat_requests(emu)
    assert len(requests) == 1 and text == emu.expected_text(requests[0].body["messages"])
    # read to its end on b: nothing more to resume, on either replica
    assert replicas.a.get("/story/ai-sdk/chat-redis/stream").status_code == 204
