"""The chat chain's threads in real databases, across real server processes: SQLite
(a file) and PostgreSQL (Debian's ``postgresql``, a throwaway cluster started here:
``postgres_server``; these skip without it).

A restart keeps the threads; two replicas on PostgreSQL share one (history carried
across, a turn on one refused on the other while it runs); a server killed mid-answer
leaves the thread consistent: the user's message and an answer marked incomplete, and
the thread free again once the dead run's lease expires.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from maritaca.local import free_port
from maritaca.testing import MaritacaEmulator, terminate
from tests.child_servers import healthy, wait_until
from tests.postgres_server import postgres_available, postgres_server
from tests.test_runs import chat_requests

ROOT = Path(__file__).resolve().parent.parent
LEASE = 2.0  # seconds: a killed server's turn frees the thread this fast


def _env(emu: MaritacaEmulator, url: str) -> dict[str, str]:
    return {**os.environ, "MARITACA_API_KEY": emu.api_key or "k",
            "MARITACA_BASE_URL": emu.base_url, "MARITACA_BACKEND": "maritaca",
            "MARITACA_CHAINS_UI": "false", "MARITACA_CHAINS_API_KEYS": "k1",
            "MARITACA_CHAINS_DATABASE_URL": url, "MARITACA_CHAINS_LOG_LEVEL": "warning",
            "MARITACA_CHAINS_THREAD_LEASE_SECONDS": str(LEASE)}


@contextmanager
def server(env: dict[str, str]) -> Iterator[httpx.Client]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "maritaca_chains:app_factory", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(url), "the server", 90, process=proc)
        with httpx.Client(base_url=url, headers={"X-API-Key": "k1"}, timeout=20) as http:
            http.proc = proc  # type: ignore[attr-defined]
            yield http
    finally:
        terminate(proc, timeout=10)


def turn(http: httpx.Client, thread: str, message: str) -> httpx.Response:
    return http.post("/chat/invoke", json={"input": {"message": message},
                                           "config": {"configurable": {"thread_id": thread}}})


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    if not postgres_available():
        pytest.skip("PostgreSQL is not installed (make install-dev adds Debian's postgresql)")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/threads.db"
    return str(request.getfixturevalue("postgres"))


def test_a_restart_keeps_the_threads(database):
    with MaritacaEmulator(reply_tokens=5) as emu:
        env = _env(emu, database)
        with server(env) as http:
            thread = http.post("/chat/threads", json={"title": "antes"}).json()["thread_id"]
            first = turn(http, thread, "Lembre: azul.").json()["output"]
        with server(env) as http:
            assert http.get(f"/chat/threads/{thread}").json()["title"] == "antes"
            assert turn(http, thread, "Qual cor?").status_code == 200
            sent = chat_requests(emu)[-1].body["messages"]  # type: ignore[index]
            assert [m["content"] for m in sent[1:]] == ["Lembre: azul.", first, "Qual cor?"]


def test_two_replicas_on_postgresql_share_a_thread_and_refuse_a_concurrent_turn(postgres):
    with MaritacaEmulator(reply_tokens=300, token_delay=0.01) as emu:
        env = _env(emu, postgres)
        with server(env) as a, server(env) as b:
            thread = a.post("/chat/threads", json={}).json()["thread_id"]
            assert [t["thread_id"] for t in b.get("/chat/threads").json()["threads"]][:1] \
                == [thread]
            run = a.post("/chat/runs", json={"input": {"message": "Conte uma história."},
                                             "config": {"configurable": {"thread_id": thread}}})
            assert run.status_code == 201
            deadline = time.monotonic() + 10
            while not (running := b.get(f"/chat/threads/{thread}").json()["running_run"]):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            refused = turn(b, thread, "E agora?")
            assert refused.status_code == 409 and running in refused.json()["detail"]
            while b.get(f"/chat/threads/{thread}").json()["running_run"]:
                assert time.monotonic() < deadline + 20
                time.sleep(0.05)
            emu_answer = b.get(f"/chat/threads/{thread}").json()["messages"][-1]
            assert emu_answer["complete"] and emu_answer["outcome"] == "ok"
            assert turn(b, thread, "E agora?").status_code == 200
            sent = chat_requests(emu)[-1].body["messages"]  # type: ignore[index]
            assert [m["content"] for m in sent[1:]] == ["Conte uma história.",
                                                         emu_answer["text"], "E agora?"]


def test_a_server_killed_mid_answer_leaves_the_thread_consistent(database):
    with MaritacaEmulator(reply_tokens=2000, token_delay=0.01) as emu:
        env = _env(emu, database)
        with server(env) as http:
            thread = http.post("/chat/threads", json={}).json()["thread_id"]
            run = http.post("/chat/runs", json={"input": {"message": "Fale sem parar."},
                                                "config": {"configurable": {"thread_id": thread}}})
            assert run.status_code == 201
            deadline = time.monotonic() + 10
            while not chat_requests(emu) or chat_requests(emu)[-1].chunks_sent < 20:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            http.proc.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
            http.proc.wait(10)  # type: ignore[attr-defined]
        with server(env) as http:
            stored = http.get(f"/chat/threads/{thread}").json()
            assert [(m["role"], m["complete"]) for m in stored["messages"]] == [
                ("user", True), ("assistant", False)]
            assert stored["message_count"] == 2
            # the dead run holds the thread until its lease expires, then it is free
            time.sleep(LEASE + 0.5)
            stored = http.get(f"/chat/threads/{thread}").json()
            assert stored["running_run"] is None
            assert stored["messages"][1]["outcome"] == "interrupted"
            assert turn(http, thread, "Ainda está aí?").status_code == 200
            after = http.get(f"/chat/threads/{thread}").json()["messages"]
            assert [(m["role"], m["complete"]) for m in after] == [
                ("user", True), ("assistant", False), ("user", True), ("assistant", True)]


async def _fresh_database(url: str, name: str) -> str:
    """A new, empty database in the PostgreSQL cluster at ``url``; its URL."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from maritaca_chains.threads.store import async_url

    engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT")
    async with engine.connect() as db:
        await db.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        await db.execute(text(f"CREATE DATABASE {name}"))
    await engine.dispose()
    return f"{url.rsplit('/', 1)[0]}/{name}"


async def test_a_database_from_before_the_model_column_is_migrated_in_place(database):
    """Schema 2 adds the model that gave each answer: a database a server of schema 1 left
    (its answers without it) is brought up to date at start, its rows kept."""
    from sqlalchemy import text

    from maritaca_chains.threads.schema import SCHEMA_VERSION
    from maritaca_chains.threads.store import ThreadStore

    if database.startswith("postgresql"):
        database = await _fresh_database(database, "before_model_column")
    old = ThreadStore(database)
    await old.start()
    async with old.engine.begin() as db:  # as schema 1 left it: no model column
        await db.execute(text("ALTER TABLE chat_messages DROP COLUMN model"))
        await db.execute(text("UPDATE maritaca_schema_version SET version = 1"))
    thread = await old.create("k1", "Antes")
    turn = await old.begin_turn("k1", thread, "run-1", "Oi")  # stored by the old schema
    await old.aclose()

    new = ThreadStore(database)
    try:
        await new.start()
        async with new.engine.connect() as db:
            version = (await db.execute(text(
                "SELECT version FROM maritaca_schema_version"))).scalar()
        assert version == SCHEMA_VERSION == 2
        before = await new.get("k1", thread)
        assert [(m["role"], m["text"]) for m in before["messages"]] == [
            ("user", "Oi"), ("assistant", "")]
        assert before["messages"][1]["model"] is None
        await new.finish_turn(turn, "Olá!", outcome="ok", model="sabia-4-2026-01-06")
        after = await new.get("k1", thread)
        assert after["messages"][1]["text"] == "Olá!"
        assert after["messages"][1]["model"] == "sabia-4-2026-01-06"
    finally:
        await new.aclose()
