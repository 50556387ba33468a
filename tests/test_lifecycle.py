"""The probes, and the library behaviour the drain relies on (these fail if sse-starlette or
uvicorn change it). The drain itself, for real, is tests/test_restart.py."""

from __future__ import annotations

import signal

import httpx
import pytest
import uvicorn
from pydantic import ValidationError
from sse_starlette.sse import AppStatus, EventSourceResponse
from uvicorn.lifespan.on import LifespanOn

from maritaca.local import free_port
from maritaca_chains import create_app
from maritaca_chains.lifecycle import DRAIN_STATE, Drain
from maritaca_chains.lifecycle.uvicorn_drain import DrainingServer
from maritaca_chains.settings import ServerSettings
from tests.conftest import emulator_model, loopback_client


def settings(**env: object) -> ServerSettings:
    return ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False, **env)  # type: ignore[call-arg]


async def probe(app: object, path: str, **kwargs: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.request(kwargs.pop("method", "GET"), path, **kwargs)  # type: ignore[arg-type]


async def test_probes_answer_outside_the_access_rules_and_say_nothing_else(emu):
    app = create_app(settings(MARITACA_CHAINS_API_KEYS="k1", MARITACA_CHAINS_REDIS_URL=""),
                     model=emulator_model(emu))
    for path in ("/livez", "/readyz"):
        # no key, a Host the server does not answer to, a browser from another site
        response = await probe(app, path, headers={"host": "evil.example",
                                                   "origin": "https://evil.example"})
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert response.headers["cache-control"] == "no-store"
        assert (await probe(app, path, method="HEAD")).status_code == 200
    # /healthz is unchanged: the usual rules apply to it
    assert (await probe(app, "/healthz", headers={"host": "evil.example"})).status_code == 400


async def test_readyz_is_503_while_draining(emu):
    app = create_app(settings(), model=emulator_model(emu))
    app.state.drain.request()
    response = await probe(app, "/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}  # the reason goes to the log only
    assert (await probe(app, "/livez")).status_code == 200


async def test_readyz_is_503_when_redis_does_not_answer(emu, caplog):
    closed = free_port()
    app = create_app(settings(MARITACA_CHAINS_REDIS_URL=f"redis://:hunter2@127.0.0.1:{closed}/0"),
                     model=emulator_model(emu))
    response = await probe(app, "/readyz")
    assert response.status_code == 503
    assert "hunter2" not in response.text and "hunter2" not in caplog.text
    assert "Redis (MARITACA_CHAINS_REDIS_URL) does not answer" in caplog.text
    await app.state.readiness.aclose()


def test_drain_seconds_setting():
    assert settings().drain_seconds == 30
    assert settings(MARITACA_CHAINS_DRAIN_SECONDS="5").drain_seconds == 5
    with pytest.raises(ValidationError):
        settings(MARITACA_CHAINS_DRAIN_SECONDS="-1")


def test_sse_starlette_still_patches_uvicorns_exit_handler_and_the_drain_avoids_it():
    """sse-starlette 1.x ends every SSE stream from uvicorn's exit handler; the drain's
    server has its own handler. If sse-starlette stops doing this, the workaround in
    lifecycle/uvicorn_drain.py may go (and this test with it)."""
    assert uvicorn.Server.handle_exit is AppStatus.handle_exit
    assert hasattr(EventSourceResponse, "listen_for_exit_signal")
    server = DrainingServer(uvicorn.Config(lambda *a: None))
    AppStatus.should_exit = False
    try:
        server.handle_exit(signal.SIGTERM, None)
        assert AppStatus.should_exit is False  # SSE streams keep going
        assert server.should_exit  # not started yet: nothing to drain
        assert server._captured_signals == [signal.SIGTERM]  # uvicorn re-raises these
    finally:
        AppStatus.should_exit = False


def test_the_drain_is_found_in_uvicorns_lifespan_state_and_a_second_signal_forces(emu):
    """DrainingServer finds the app's Drain where the lifespan state puts it, the first
    signal only starts the drain, the second stops at once."""
    server = DrainingServer(uvicorn.Config(lambda *a: None))
    server.lifespan = LifespanOn(server.config)  # what uvicorn's lifespan="on" runs
    assert isinstance(server.lifespan.state, dict)  # uvicorn's lifespan state, shared
    drain = Drain(30)
    server.lifespan.state[DRAIN_STATE] = drain
    server.started = True
    server.handle_exit(signal.SIGTERM, None)
    assert drain.draining and not server.should_exit
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit and server.force_exit
    # MARITACA_CHAINS_DRAIN_SECONDS=0 still goes through the drain: cut at once, named
    at_once = DrainingServer(uvicorn.Config(lambda *a: None))
    at_once.lifespan = LifespanOn(at_once.config)
    at_once.lifespan.state[DRAIN_STATE] = Drain(0)
    at_once.started = True
    at_once.handle_exit(signal.SIGTERM, None)
    assert at_once.lifespan.state[DRAIN_STATE].draining and not at_once.should_exit


def test_a_draining_websocket_answers_what_it_was_sent_then_closes_1012():
    """Inputs sent before the drain are answered (one refused as queue_full gets no
    [END] and is not waited for); then the session closes with 1012, service restart."""
    from starlette.websockets import WebSocketDisconnect

    from maritaca.testing import MaritacaEmulator

    with MaritacaEmulator(reply_tokens=20, token_delay=0.03) as slow:
        app = create_app(settings(), model=emulator_model(slow))
        with loopback_client(app) as client, client.websocket_connect("/story/ws") as ws:
            for topic in ("um", "dois", "três", "quatro"):  # 1 running, 2 queued, 1 refused
                ws.send_text(topic)
            app.state.drain.request()
            frames = []
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    frames.append(ws.receive_text())
    assert closed.value.code == 1012
    assert frames.count("[END]") == 3
    assert sum('"queue_full"' in f for f in frames) == 1
    assert frames[-1] == "[END]"


def test_an_open_ui_tab_does_not_hold_the_drain(emu):
    """The Gradio UI keeps a heartbeat stream open as long as its tab: the drain ends it
    at once rather than waiting the drain time for it (DrainingServer in a thread, the
    signal handler called as the signal would)."""
    import threading
    import time

    app = create_app(ServerSettings(_env_file=None), model=emulator_model(emu))  # type: ignore[call-arg]
    server = DrainingServer(uvicorn.Config(app, host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    with httpx.Client(timeout=20) as http, \
            http.stream("GET", f"{url}/ui/gradio_api/heartbeat/tab-1") as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines) == "data: ALIVE"
        assert app.state.drain.in_flight() == 1
        signalled = time.monotonic()
        server.handle_exit(signal.SIGTERM, None)
        list(lines)  # ends when the drain ends it
    thread.join(20)
    assert not thread.is_alive()
    assert time.monotonic() - signalled < 10  # not the 30 s drain
