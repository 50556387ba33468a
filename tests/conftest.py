"""Shared fixtures: the emulator, the app over it (in-process and on real uvicorn)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from maritaca import ChatMaritaca, close_clients
from maritaca.testing import MaritacaEmulator, RecordedRequest

pytest_plugins = ["maritaca.testing.pytest_plugin"]

# The version-range smoke set runs in venvs of its own (`make compat`), not against uv.lock.
collect_ignore = ["compat"]


# the chat chain's threads: one SQLite file for the session (servers started as processes
# inherit it), never the user's own database; a child started "as a user runs it",
# without our MARITACA_* settings, finds the default one under a throwaway XDG_DATA_HOME
_DATA = tempfile.mkdtemp(prefix="maritaca-threads-")
os.environ.setdefault("MARITACA_CHAINS_DATABASE_URL",
                      "sqlite:///" + os.path.join(_DATA, "threads.db"))
os.environ.setdefault("XDG_DATA_HOME", os.path.join(_DATA, "xdg-data"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the full-size slow tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="full-size run: use `make soak` (pytest --soak)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_sse_exit_event() -> Iterator[None]:
    """sse-starlette 1.x keeps one asyncio.Event for the process, bound to the first loop
    that used it; each test runs its own loop (and uvicorn thread), so reset it."""
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit_event = None
    yield
    AppStatus.should_exit_event = None


@pytest.fixture(autouse=True, scope="session")
def _close_pooled_clients() -> Iterator[None]:
    yield
    close_clients()


@pytest.fixture
def emu() -> Iterator[MaritacaEmulator]:
    with MaritacaEmulator(reply_tokens=12) as emulator:
        yield emulator


def emulator_model(emulator: MaritacaEmulator, **kwargs: object) -> ChatMaritaca:
    kwargs.setdefault("max_retries", 0)
    return ChatMaritaca(base_url=emulator.base_url, api_key=emulator.api_key, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def app(emu: MaritacaEmulator):
    from maritaca_chains import create_app
    from maritaca_chains.settings import ServerSettings

    return create_app(ServerSettings(_env_file=None), model=emulator_model(emu))  # type: ignore[call-arg]


# In-process clients connect from a loopback address, as a local user would: the access
# guard admits loopback by the socket's address only (and Starlette's TestClient would
# otherwise say "testclient")
LOOPBACK = ("127.0.0.1", 50000)


def loopback_client(app: object, **kwargs: object) -> TestClient:
    """Starlette's TestClient for ``app``, connecting from 127.0.0.1."""
    return TestClient(app, client=LOOPBACK, **kwargs)  # type: ignore[arg-type]


def loopback_transport(app: object, **kwargs: object) -> httpx.ASGITransport:
    """httpx's in-process transport for ``app``, connecting from 127.0.0.1."""
    return httpx.ASGITransport(app=app, client=LOOPBACK, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = loopback_transport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                 timeout=30) as http:
        yield http


class RunningServer:
    """uvicorn serving an app on 127.0.0.1 at a free port, in a thread."""

    def __init__(self, app: object, **config: object) -> None:
        # open streams (a browser's event source) get 2 s to finish at shutdown
        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",  # type: ignore[arg-type]
                                     lifespan="on", timeout_graceful_shutdown=2, **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        if self.thread.is_alive():
            raise RuntimeError(f"uvicorn at {self.url} did not stop within 10 s")


SLOW_TOKENS = 400


@pytest.fixture
def slow() -> Iterator[tuple[MaritacaEmulator, RunningServer]]:
    """A long answer paced at 10 ms a token, behind a real uvicorn: time to stop it or
    hang up mid-stream."""
    from maritaca_chains import create_app
    from maritaca_chains.settings import ServerSettings

    with MaritacaEmulator(reply_tokens=SLOW_TOKENS, token_delay=0.01) as emulator:
        app = create_app(ServerSettings(_env_file=None),  # type: ignore[call-arg]
                         model=emulator_model(emulator))
        with RunningServer(app) as server:
            yield emulator, server


@pytest.fixture
def live_server(app) -> Iterator[RunningServer]:
    with RunningServer(app) as running:
        yield running


def wait_disconnected(record: RecordedRequest, since: float) -> None:
    """Wait (2 s at most) until the emulator saw this request's client hang up, and
    check it did within 0.5 s of ``since`` (when our side stopped reading)."""
    deadline = since + 2
    while not record.client_disconnected and time.monotonic() < deadline:
        time.sleep(0.005)
    assert record.client_disconnected, "the upstream request is still open"
    assert record.disconnected_at is not None and record.disconnected_at - since < 0.5


def run_sync(coro):  # noqa: ANN001, ANN201 - tiny helper for sync tests
    return asyncio.run(coro)


# ------------------------------------------------------------------ the browser tests'
# Debian's headless Chromium (tests/browser_support.py), launched once per module that
# asks for a page; Playwright is imported only then (the compat venvs lack it).

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from tests.browser_support import launched

    with launched() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    from tests.browser_support import new_page

    with new_page(browser) as opened:
        yield opened
