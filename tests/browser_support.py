"""What the browser tests share: Debian's headless Chromium, its marks, the app served
to it, and the waits on a page. Not a test module.

The ``browser`` and ``page`` fixtures that drive it are in ``tests/conftest.py`` (so a
test module asks for ``page`` without importing anything); they import Playwright only
when a test asks for them. ``tests/test_browser_security.py`` launches its own.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from maritaca.testing import MaritacaEmulator, RecordedRequest
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

__all__ = ["ARTIFACTS", "BROWSER_MARKS", "CHROMIUM", "LAUNCH_ARGS", "TOKEN_DELAY", "WAIT_MS",
           "assert_grew", "chat_requests", "launched", "new_page", "sample_until", "serve",
           "wait_for"]

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Screenshots go here, taken with animations="disabled": Gradio's buttons fade between
# enabled and disabled over 0.2 s, and a shot taken as the page changes shows the old look.
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TOKEN_DELAY = 0.05  # seconds between chunks: slow enough to watch the text grow
WAIT_MS = 20_000  # the longest any single wait on the page may take

# Every browser test module's marks (``pytestmark = [*BROWSER_MARKS, ...]``)
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"Debian's chromium is not at {CHROMIUM} (make install-dev)"),
]


@contextmanager
def launched(*extra_args: str) -> Iterator[Browser]:
    """Debian's Chromium, headless, with ``LAUNCH_ARGS`` and ``extra_args``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, timeout=60_000,
                                              args=[*LAUNCH_ARGS, *extra_args])
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def new_page(browser: Browser, init_script: str | None = None) -> Iterator[Page]:
    """A page in a fresh context: 1280x900, pt-BR, every wait bounded by ``WAIT_MS``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="pt-BR")
    context.set_default_timeout(WAIT_MS)
    if init_script is not None:
        context.add_init_script(init_script)
    try:
        yield context.new_page()
    finally:
        context.close()


@contextmanager
def serve(page: Page, reply_tokens: int, **settings: str
          ) -> Iterator[tuple[MaritacaEmulator, RunningServer]]:
    """The app (``settings``: its environment, e.g. ``MARITACA_CHAINS_RATE_LIMIT``) on
    uvicorn at 127.0.0.1 over a slow emulator; both stop on exit, after the page has left
    (open event streams would otherwise hold uvicorn's shutdown)."""
    with MaritacaEmulator(reply_tokens=reply_tokens, token_delay=TOKEN_DELAY) as emu:
        app = create_app(ServerSettings(_env_file=None, **settings),  # type: ignore[call-arg]
                         model=emulator_model(emu))
        with RunningServer(app) as server:
            try:
                yield emu, server
            finally:
                page.goto("about:blank")
        assert not server.thread.is_alive(), "uvicorn did not stop"


def chat_requests(emu: MaritacaEmulator) -> list[RecordedRequest]:
    return [r for r in emu.requests if r.path.endswith("/chat/completions")]


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_MS / 1000,
             page: Page | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            seen = ""
            if page is not None:  # what the page showed then, to tell why afterwards
                shot = ARTIFACTS / f"timeout-{re.sub(r'[^a-z0-9]+', '-', what.lower())}.png"
                with suppress(Exception):
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=shot, full_page=True)
                    seen = f" (the page then: {shot.name})"
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{seen}")
        if page is not None:
            page.wait_for_timeout(50)
        else:
            time.sleep(0.05)


def sample_until(read: Callable[[], str], done: Callable[[str], bool], page: Page,
                 what: str, every_ms: int = 100) -> list[str]:
    """Read the page's text every ``every_ms`` until ``done(text)``; all the samples."""
    samples = [read()]
    deadline = time.monotonic() + WAIT_MS / 1000
    while not done(samples[-1]):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last text: {samples[-1]!r}")
        page.wait_for_timeout(every_ms)
        samples.append(read())
    return samples


def assert_grew(samples: list[str], final: str) -> None:
    """The text took several visible steps, each extending the one before, up to ``final``."""
    steps = [s for i, s in enumerate(samples) if s and (i == 0 or s != samples[i - 1])]
    assert len(steps) >= 3, f"the text did not visibly grow: {steps}"
    for before, after in zip(steps, steps[1:], strict=False):
        assert after.startswith(before) and len(after) > len(before), (before, after)
    assert steps[-1] == final
