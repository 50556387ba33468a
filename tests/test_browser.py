"""LangServe's playground in a real headless Chromium (the Gradio UI: tests/test_browser_ui.py).

The app runs on real uvicorn on 127.0.0.1 over the emulator with a per-token delay, so a
stream takes seconds and the page visibly grows; the tests sample the text while it
streams, then compare it with the emulator's reply. Screenshots go to ``test-artifacts/``.
Needs Debian's chromium at /usr/bin/chromium (``make install-dev``); skips without it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from chains import CHAINS
from maritaca.testing import MaritacaEmulator, RecordedRequest
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TOKEN_DELAY = 0.05  # seconds between chunks: slow enough to watch the text grow
PLAYGROUND_TOKENS = 40  # a 2 s stream
WAIT_MS = 20_000  # the longest any single wait on the page may take

# LangServe's playground (JSON Forms) throws this when a schema has {"type": "null"}, e.g.
# `anyOf: [{"type": "number"}, {"type": "null"}]` from an Optional field; it then renders
# nothing at all.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"Debian's chromium is not at {CHROMIUM} (make install-dev)"),
]

PLAYGROUND_INPUTS = {
    "story": "um sabiá que aprendeu a programar",
    "chat": "Olá! Quem é você?",
    "qa": "Qual é a capital do Brasil?",
    "summarize": "O sabiá-laranjeira é a ave símbolo do Brasil desde 2002. Seu canto "
                 "aparece na Canção do Exílio, de Gonçalves Dias.",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS,
                                              timeout=60_000)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="pt-BR")
    context.set_default_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@contextmanager
def serve(page: Page, reply_tokens: int) -> Iterator[tuple[MaritacaEmulator, RunningServer]]:
    """The app on uvicorn at 127.0.0.1 over a slow emulator; both stop on exit, after the
    page has left (open event streams would otherwise hold uvicorn's shutdown)."""
    with MaritacaEmulator(reply_tokens=reply_tokens, token_delay=TOKEN_DELAY) as emu:
        app = create_app(ServerSettings(_env_file=None), model=emulator_model(emu))  # type: ignore[call-arg]
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
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
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


# ------------------------------------------------------------------------ playground

@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(CHAINS))
def test_playground_streams(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"playground-{name}.png"
    field = CHAINS[name].main_field
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    with serve(page, PLAYGROUND_TOKENS) as (emu, server):
        page.goto(f"{server.url}/{name}/playground/")
        box = page.locator(f'[id="#/properties/{field}-input"]')
        try:  # the React app renders the form from the schemas, or throws
            wait_for(lambda: page_errors or box.is_visible(), f"the {field!r} field", page=page)
        finally:
            if not box.is_visible():
                page.screenshot(path=shot, full_page=True)
        # (an Optional field in an input or config schema crashes the playground:
        # 'Unknown type: {"type":"null"}'; the chains' schemas avoid them)
        assert not page_errors, f"the /{name} playground failed: {page_errors}"
        box.fill(PLAYGROUND_INPUTS[name])
        start = page.get_by_role("button", name="Start")
        start.click()

        wait_for(lambda: chat_requests(emu), "the chain's request upstream", page=page)
        request = chat_requests(emu)[0]
        assert request.body is not None
        expected = emu.expected_text(request.body["messages"])
        output = page.locator("h2:text-is('Output') + div")

        def read() -> str:
            return output.inner_text().strip() if output.count() else ""

        samples = sample_until(read, lambda text: text == expected, page,
                               f"the /{name} playground output")
        page.get_by_role("button", name="Start").wait_for()  # the run is over
        page.screenshot(path=shot, full_page=True)
    assert_grew(samples, expected)
    assert [r.status for r in chat_requests(emu)] == [200]
    assert not page_errors
