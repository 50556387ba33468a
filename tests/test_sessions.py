"""The login cookie is a session, not a credential derived from the key: the tests play
someone who stole an old cookie, guesses keys, or logs out on one replica.

- each login gets a new random token, with an expiry the browser and the server keep;
- ``POST /logout`` ends the session on the server (a replayed cookie is refused), and a
  cross-site page cannot log anyone out;
- wrong keys from one address are throttled (429 with ``Retry-After``), the right key
  included, until the window moves on;
- with Redis, a session started on one replica works on another and ends everywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.security import ACCESS_COOKIE
from maritaca_chains.settings import ServerSettings
from tests.child_servers import needs_redis, start_redis
from tests.conftest import RunningServer, emulator_model

KEY = "session-key-0001"
BODY = {"input": {"topic": "Brasil"}}


def app_with(emu: MaritacaEmulator, **env: Any) -> Any:
    env = {"MARITACA_CHAINS_API_KEYS": KEY, **env}
    return create_app(ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False, **env),  # type: ignore[call-arg]
                      model=emulator_model(emu))


@pytest.fixture(scope="module")
def emu() -> Iterator[MaritacaEmulator]:
    with MaritacaEmulator(reply_tokens=4) as emulator:
        yield emulator


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://127.0.0.1:8000", timeout=20)


async def login(http: httpx.AsyncClient, key: str = KEY) -> httpx.Response:
    return await http.post("/login", data={"key": key})


async def test_each_login_is_a_new_random_session_with_an_expiry(emu):
    async with client(app_with(emu, MARITACA_CHAINS_SESSION_SECONDS=3600)) as http:
        first, second = await login(http), await login(http)
        assert first.status_code == second.status_code == 303
        tokens = [r.cookies[ACCESS_COOKIE] for r in (first, second)]
        assert tokens[0] != tokens[1] and all(len(t) >= 40 for t in tokens)
        assert KEY not in "".join(tokens)
        header = first.headers["set-cookie"].lower()
        assert "max-age=3600" in header and "httponly" in header and "samesite=strict" in header
        assert (await http.post("/story/invoke", json=BODY)).status_code == 200


async def test_a_session_ends_when_it_expires(emu):
    async with client(app_with(emu, MARITACA_CHAINS_SESSION_SECONDS=1)) as http:
        token = (await login(http)).cookies[ACCESS_COOKIE]
        assert (await http.post("/story/invoke", json=BODY)).status_code == 200
        await asyncio.sleep(1.2)
        http.cookies.set(ACCESS_COOKIE, token)  # a browser that ignored Max-Age
        assert (await http.post("/story/invoke", json=BODY)).status_code == 401


async def test_logout_ends_the_session_and_a_replayed_cookie_is_refused(emu):
    async with client(app_with(emu)) as http:
        token = (await login(http)).cookies[ACCESS_COOKIE]
        out = await http.post("/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert ACCESS_COOKIE not in http.cookies
        http.cookies.set(ACCESS_COOKIE, token)  # the stolen copy
        assert (await http.post("/story/invoke", json=BODY)).status_code == 401


async def test_another_site_cannot_log_anyone_out(emu):
    async with client(app_with(emu)) as http:
        await login(http)
        refused = await http.post("/logout", headers={"origin": "http://evil.example"})
        assert refused.status_code == 403
        assert (await http.post("/story/invoke", json=BODY)).status_code == 200


async def test_wrong_keys_are_throttled_per_address(emu):
    async with client(app_with(emu, MARITACA_CHAINS_LOGIN_ATTEMPTS="3/2 seconds")) as http:
        codes = [(await login(http, f"guess-{i}")).status_code for i in range(3)]
        assert codes == [401, 401, 401]
        throttled = await login(http)  # even the right key, while throttled
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 2
        assert "Muitas tentativas" in throttled.text
        assert ACCESS_COOKIE not in throttled.cookies
        await asyncio.sleep(2.1)
        assert (await login(http)).status_code == 303


@needs_redis
def test_with_redis_a_session_works_on_every_replica_and_ends_everywhere(emu, tmp_path: Path):
    with start_redis(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        with RunningServer(app_with(emu, MARITACA_CHAINS_REDIS_URL=url)) as a, \
                RunningServer(app_with(emu, MARITACA_CHAINS_REDIS_URL=url)) as b, \
                httpx.Client(base_url=a.url) as on_a, httpx.Client(base_url=b.url) as on_b:
            token = on_a.post("/login", data={"key": KEY}).cookies[ACCESS_COOKIE]
            on_b.cookies.set(ACCESS_COOKIE, token)
            assert on_b.post("/story/invoke", json=BODY).status_code == 200
            assert on_b.post("/logout").status_code == 303
            assert on_a.post("/story/invoke", json=BODY).status_code == 401


@needs_redis
def test_with_redis_a_removed_key_ends_the_sessions_made_with_it(emu, tmp_path: Path):
    """An operator who removes a leaked key and restarts ends its browser sessions too,
    though Redis still holds them."""
    kept = "kept-key-0002"
    with start_redis(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        both = app_with(emu, MARITACA_CHAINS_REDIS_URL=url,
                        MARITACA_CHAINS_API_KEYS=f"{KEY},{kept}")
        with RunningServer(both) as before, httpx.Client(base_url=before.url) as http:
            token = http.post("/login", data={"key": KEY}).cookies[ACCESS_COOKIE]
        after = app_with(emu, MARITACA_CHAINS_REDIS_URL=url, MARITACA_CHAINS_API_KEYS=kept)
        with RunningServer(after) as server, httpx.Client(base_url=server.url) as http:
            http.cookies.set(ACCESS_COOKIE, token)
            assert http.post("/story/invoke", json=BODY).status_code == 401
            assert http.post("/chat/threads", json={}).status_code == 401


def test_a_websocket_stops_running_when_its_login_session_ends(emu):
    """The access check holds on every run of an open WebSocket, as on every HTTP request:
    once the session has expired the next input gets the refusal and the socket closes."""
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    app = app_with(emu, MARITACA_CHAINS_SESSION_SECONDS=1)
    with TestClient(app, base_url="http://127.0.0.1:8000") as http:
        token = http.post("/login", data={"key": KEY}, follow_redirects=False
                          ).cookies[ACCESS_COOKIE]
        before = len(emu.requests)
        with http.websocket_connect("/story/ws",
                                    headers={"cookie": f"{ACCESS_COOKIE}={token}"}) as ws:
            ws.send_text("Brasil")
            while ws.receive_text() != "[END]":
                pass
            time.sleep(1.2)  # the session expires while the socket stays open
            ws.send_text("Brasil")
            refused = ws.receive_text()
            assert refused.startswith("[ERROR]") and '"status_code": 401' in refused
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == 1008
        assert len(emu.requests) == before + 1  # the second input never reached the model
