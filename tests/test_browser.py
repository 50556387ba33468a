"""LangServe's playground in a real headless Chromium (the Gradio UI: tests/test_browser_ui.py).

The app runs on real uvicorn on 127.0.0.1 over the emulator with a per-token delay, so a
stream takes seconds and the page visibly grows; the tests sample the text while it
streams, then compare it with the emulator's reply. Screenshots go to ``test-artifacts/``.
Needs Debian's chromium at /usr/bin/chromium (``make install-dev``); skips without it.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from chains import CHAINS
from tests.browser_support import (
    ARTIFACTS,
    BROWSER_MARKS,
    assert_grew,
    chat_requests,
    sample_until,
    serve,
    wait_for,
)

PLAYGROUND_TOKENS = 40  # a 2 s stream
pytestmark = BROWSER_MARKS

PLAYGROUND_INPUTS = {
    "story": "um sabiá que aprendeu a programar",
    "chat": "Olá! Quem é você?",
    "qa": "Qual é a capital do Brasil?",
    "summarize": "O sabiá-laranjeira é a ave símbolo do Brasil desde 2002. Seu canto "
                 "aparece na Canção do Exílio, de Gonçalves Dias.",
}


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
                page.screenshot(animations="disabled", path=shot, full_page=True)
        # (an Optional field in an input or config schema crashes the playground:
        # 'Unknown type: {"type":"null"}'; the chains' schemas avoid them)
        assert not page_errors, f"the /{name} playground failed: {page_errors}"
        box.fill(PLAYGROUND_INPUTS[name])
        start = page.get_by_role("button", name="Iniciar")
        start.click()

        wait_for(lambda: chat_requests(emu), "the chain's request upstream", page=page)
        request = chat_requests(emu)[0]
        assert request.body is not None
        expected = emu.expected_text(request.body["messages"])
        output = page.locator("h2:text-is('Resposta') + div")

        def read() -> str:  # "..." is the playground's own text until a chunk comes
            text = output.inner_text().strip() if output.count() else ""
            return "" if text == "..." else text

        samples = sample_until(read, lambda text: text == expected, page,
                               f"the /{name} playground output")
        page.get_by_role("button", name="Iniciar").wait_for()  # the run is over
        page.screenshot(animations="disabled", path=shot, full_page=True)
    assert_grew(samples, expected)
    assert [r.status for r in chat_requests(emu)] == [200]
    assert not page_errors
