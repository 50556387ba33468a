"""Resumable runs over the emulator, runs kept in process: resume after a dropped
connection, several readers, cancellation and the no-reader grace closing the upstream,
expiry, other keys' runs, full-memory answers, and LangServe's validation."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from maritaca.testing import MaritacaEmulator, RecordedRequest, Scenario
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model, wait_disconnected

STORY = {"input": {"topic": "Brasil"}}

Event = tuple[int | None, str, str | None]  # id, event, data


def parse_sse(text: str) -> list[Event]:
    """SSE blocks as (id, event, data); comment and ``retry:``-only blocks left out."""
    events: list[Event] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n")
                      if ": " in line and not line.startswith(":"))
        if "event" in fields:
            events.append((int(fields["id"]) if "id" in fields else None, fields["event"],
                           fields.get("data")))
    return events


def read_events(http: httpx.Client, url: str, *, limit: int | None = None,
                headers: dict[str, str] | None = None) -> list[Event]:
    """Follow ``url``; with ``limit``, hang up after that many events."""
    events: list[Event] = []
    block: list[str] = []
    with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line:
                block.append(line)
                continue
            events += parse_sse("\n".join(block) + "\n\n")
            block = []
            if limit is not None and len(events) >= limit:
                break
    return events


def text_of(events: list[Event]) -> str:
    return "".join(json.loads(data) for _, kind, data in events if kind == "data" and data)


def chat_requests(emu: MaritacaEmulator) -> list[RecordedRequest]:
    return [r for r in emu.requests if r.path.endswith("/chat/completions")]


def settings(**env: object) -> ServerSettings:
    return ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False, **env)  # type: ignore[call-arg]


@contextmanager
def served(reply_tokens: int = 60, token_delay: float = 0.02, **env: object
           ) -> Iterator[tuple[MaritacaEmulator, str, httpx.Client]]:
    with MaritacaEmulator(reply_tokens=reply_tokens, token_delay=token_delay) as emu:
        app = create_app(settings(**env), model=emulator_model(emu))
        with RunningServer(app) as server, httpx.Client(base_url=server.url,
                                                        timeout=20) as http:
            yield emu, server.url, http


def start(http: httpx.Client, body: dict[str, object] = STORY, chain: str = "story",
          **kwargs: object) -> dict[str, str]:
    response = http.post(f"/{chain}/runs", json=body, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 201, response.text
    started = response.json()
    assert started["stream_url"] == f"/{chain}/runs/{started['run_id']}/stream"
    assert response.headers["location"] == started["status_url"]
    return started


def wait_status(http: httpx.Client, url: str, status: str, timeout: float = 10,
                **kwargs: object) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while (now := http.get(url, **kwargs).json())["status"] != status:  # type: ignore[arg-type]
        assert time.monotonic() < deadline, now
        time.sleep(0.02)
    return now


# ------------------------------------------------------------------------ resuming

def test_a_dropped_reader_resumes_with_last_event_id_and_the_model_is_asked_once():
    with served() as (emu, _, http):
        run = start(http)
        first = read_events(http, run["stream_url"], limit=10)
        assert [e[0] for e in first] == list(range(1, 11))
        assert first[0][1] == "metadata" and json.loads(first[0][2] or "")["run_id"] == \
            run["run_id"]
        time.sleep(0.3)  # the run goes on without a reader meanwhile
        rest = read_events(http, run["stream_url"], headers={"Last-Event-ID": "10"})
        events = first + rest
        assert [e[0] for e in events] == list(range(1, len(events) + 1))  # none twice or lost
        assert events[-1][1] == "end" and [e[1] for e in events[1:-1]] == ["data"] * \
            (len(events) - 2)
        requests = chat_requests(emu)
        assert len(requests) == 1
        assert text_of(events) == emu.expected_text(requests[0].body["messages"])
        # the uninterrupted answer, by LangServe's /stream, is the same text
        whole = http.post("/story/stream", json=STORY).text
        assert text_of(parse_sse(whole)) == text_of(events)
        status = http.get(run["status_url"]).json()
        assert status["status"] == "done" and status["events"] == len(events)
        assert status["usage"]["output_tokens"] == 60
        # read to the end: EventSource's reconnection gets 204, which stops it
        again = http.get(run["stream_url"], headers={"Last-Event-ID": str(len(events))})
        assert again.status_code == 204


def test_last_event_id_in_the_query_and_several_readers_see_the_same_events():
    with served() as (emu, _, http):
        run = start(http)
        with httpx.Client(base_url=str(http.base_url), timeout=20) as other:
            live = read_events(other, run["stream_url"], limit=5)
            a = read_events(http, run["stream_url"] + "?last_event_id=3")
            b = read_events(other, run["stream_url"] + "?last_event_id=5")
        assert [e[0] for e in a][0] == 4 and [e[0] for e in b][0] == 6
        assert a[2:] == b and live[3:] == a[:2]
        replay = read_events(http, run["stream_url"])  # a finished run reads again
        assert replay[3:] == a and len(chat_requests(emu)) == 1
        response = http.get(run["stream_url"], headers={"Last-Event-ID": "x"})
        assert response.status_code == 422


def test_the_stream_has_langserve_event_shape_with_ids_and_a_retry_hint():
    with served(reply_tokens=5, token_delay=0) as (_, _, http):
        run = start(http)
        wait_status(http, run["status_url"], "done")
        response = http.get(run["stream_url"])
        assert response.text.startswith("retry: 1000\r\n\r\nid: 1\r\nevent: metadata\r\n")
        assert response.text.endswith("id: 7\r\nevent: end\r\ndata: \r\n\r\n")
        assert response.headers["cache-control"] == "no-store"


def test_an_upstream_failure_is_the_runs_named_error_event():
    with served(reply_tokens=20, token_delay=0) as (emu, _, http):
        emu.enqueue(Scenario.rate_limit(retry_after=3))
        run = start(http)
        events = read_events(http, run["stream_url"])
        assert events[-1][1] == "error"
        error = json.loads(events[-1][2] or "")
        assert error["type"] == "rate_limit" and error["status_code"] == 429
        assert error["retry_after"] == 3
        assert http.get(run["status_url"]).json()["status"] == "failed"


# -------------------------------------------------------------------- cancellation

def test_delete_cancels_and_closes_the_upstream_at_once():
    with served(reply_tokens=400, token_delay=0.02) as (emu, _, http):
        run = start(http)
        seen = read_events(http, run["stream_url"], limit=5)
        since = time.monotonic()
        response = http.delete(run["status_url"])
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        wait_disconnected(chat_requests(emu)[0], since)
        assert chat_requests(emu)[0].chunks_sent < 100
        rest = read_events(http, run["stream_url"], headers={"Last-Event-ID": "5"})
        assert seen[-1][0] == 5 and rest[-1][1] == "error"
        error = json.loads(rest[-1][2] or "")
        assert error["type"] == "cancelled"
        assert error["message"] == "A execução foi cancelada (por um DELETE)."
        # cancelling again, or a finished run, changes nothing
        assert http.delete(run["status_url"]).json()["status"] == "cancelled"
        # said in the language of the request that started the run
        run = start(http, headers={"Accept-Language": "en"})
        read_events(http, run["stream_url"], limit=2)
        http.delete(run["status_url"])
        error = json.loads(read_events(http, run["stream_url"])[-1][2] or "")
        assert error["message"] == "The run was cancelled: cancelled by DELETE."


def test_a_run_nobody_reads_is_cancelled_after_the_grace_and_the_upstream_closes():
    with served(reply_tokens=400, token_delay=0.02,
                MARITACA_CHAINS_RUN_GRACE_SECONDS=0.6) as (emu, _, http):
        run = start(http)
        started = time.monotonic()
        status = wait_status(http, run["status_url"], "cancelled")
        wait_disconnected(chat_requests(emu)[0], time.monotonic())
        assert 0.6 <= time.monotonic() - started < 3, status
        error = json.loads(read_events(http, run["stream_url"])[-1][2] or "")
        assert error["message"] == "A execução foi cancelada (ninguém a leu por 0.6 s)."
        # a reader that stays keeps a longer run going past the grace
        emu.reset()
        emu.enqueue(Scenario.ok(reply_tokens=80))
        run = start(http)
        events = read_events(http, run["stream_url"])  # 80 x 20 ms: longer than the grace
        assert events[-1][1] == "end" and len(events) == 82
        # ... and a reader that left starts the grace again
        emu.enqueue(Scenario.ok(reply_tokens=400))
        run = start(http)
        read_events(http, run["stream_url"], limit=3)
        left = time.monotonic()
        wait_status(http, run["status_url"], "cancelled")
        assert time.monotonic() - left >= 0.6
        wait_disconnected(chat_requests(emu)[-1], time.monotonic())


# ----------------------------------------------------------- expiry, owners, limits

def test_finished_runs_expire_after_the_ttl_and_unknown_runs_are_404():
    with served(reply_tokens=5, token_delay=0, MARITACA_CHAINS_RUN_TTL_SECONDS=0.5) \
            as (_, _, http):
        run = start(http)
        wait_status(http, run["status_url"], "done")
        assert http.get(run["stream_url"]).status_code == 200
        time.sleep(0.6)
        assert http.get(run["status_url"]).status_code == 404
        assert http.get(run["stream_url"]).status_code == 404
        assert http.get("/story/runs/nope").status_code == 404
        assert http.delete("/story/runs/nope").status_code == 404
        other = start(http)  # the run exists, but not under another chain
        assert http.get(f"/qa/runs/{other['run_id']}").status_code == 404


def test_runs_belong_to_the_key_that_started_them():
    with served(reply_tokens=5, token_delay=0, MARITACA_CHAINS_API_KEYS="k1,k2") \
            as (_, _, http):
        assert http.post("/story/runs", json=STORY).status_code == 401
        run = start(http, headers={"X-API-Key": "k1"})
        mine = {"Authorization": "Bearer k1"}
        wait_status(http, run["status_url"], "done", headers=mine)
        for key in ("k2",):
            other = {"X-API-Key": key}
            assert http.get(run["status_url"], headers=other).status_code == 404
            assert http.get(run["stream_url"], headers=other).status_code == 404
            assert http.delete(run["status_url"], headers=other).status_code == 404
        assert http.get(run["stream_url"], headers={"X-API-Key": "nope"}).status_code == 401
        # the browser's login session for the same key reads it
        assert http.post("/login", data={"key": "k1"}).status_code == 303
        assert text_of(read_events(http, run["stream_url"]))
        http.cookies.clear()


def test_when_full_new_runs_get_503_and_finished_runs_make_room():
    with served(reply_tokens=400, token_delay=0.02, MARITACA_CHAINS_RUN_MAX_RUNS=1) \
            as (emu, _, http):
        run = start(http)
        refused = http.post("/story/runs", json=STORY)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert "runs" in refused.json()["detail"]
        read_events(http, run["stream_url"], limit=3)
        http.delete(run["status_url"])
        emu.enqueue(Scenario.ok(reply_tokens=5))
        second = start(http)  # the cancelled run made room
        assert http.get(run["status_url"]).status_code == 404
        wait_status(http, second["status_url"], "done")
        assert len(chat_requests(emu)) == 2


def test_only_the_last_events_are_kept_and_older_ones_are_a_named_error():
    with served(reply_tokens=40, token_delay=0, MARITACA_CHAINS_RUN_MAX_EVENTS=10) \
            as (_, _, http):
        run = start(http)
        wait_status(http, run["status_url"], "done")
        events = read_events(http, run["stream_url"])
        assert events == [(None, "error", events[0][2])]
        error = json.loads(events[0][2] or "")
        assert error["status_code"] == 410 and error["type"] == "events_dropped"
        tail = read_events(http, run["stream_url"], headers={"Last-Event-ID": "38"})
        assert [e[0] for e in tail] == [39, 40, 41, 42] and tail[-1][1] == "end"


# ---------------------------------------------------------------------- validation

@pytest.mark.parametrize(("body", "field"), [
    ({"input": {"topic": "x" * 501}}, "topic"),
    ({"input": {}}, "topic"),
    ({"input": {"topic": "x", "surprise": 1}}, "surprise"),
    ({"topic": "x"}, "input"),
    ({"input": {"topic": "x"}, "config": {"configurable": {"api_key": "mine"}}}, "api_key"),
    ({"input": {"topic": "x"}, "config": {"configurable": {"temperature": 9}}}, "temperature"),
    ({"input": {"topic": "x"}, "config": {"configurable": {"model": "gpt-4"}}}, "model"),
])
async def test_bad_bodies_are_the_same_422_as_langserves(client, emu, body, field):
    response = await client.post("/story/runs", json=body)
    assert response.status_code == 422, response.text
    assert field in response.text
    langserve = await client.post("/story/stream", json=body)
    assert langserve.status_code == 422
    assert not chat_requests(emu)
