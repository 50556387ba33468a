"""A chain from a directory in a real headless Chromium: its card on the landing page,
its tab in /ui/ with the form generated from its inputs (a radio, a number box, a text
box with its label and placeholder), and an answer streamed into the history.
Screenshots: ``test-artifacts/chain-dir-*.png``."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.browser_support import ARTIFACTS, BROWSER_MARKS, TOKEN_DELAY, chat_requests, wait_for
from tests.conftest import RunningServer, emulator_model
from tests.test_chain_directory import TRADUCAO

pytestmark = [*BROWSER_MARKS, pytest.mark.timeout(180),
              pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]


def test_a_directory_chain_in_the_browser(page: Page, tmp_path) -> None:
    (tmp_path / "traducao.yaml").write_text(TRADUCAO, encoding="utf-8")
    settings = ServerSettings(_env_file=None, MARITACA_CHAINS_DIR=str(tmp_path))  # type: ignore[call-arg]
    with MaritacaEmulator(reply_tokens=30, token_delay=TOKEN_DELAY) as emu:
        app = create_app(settings, model=emulator_model(emu))
        with RunningServer(app) as server:
            try:
                page.goto(f"{server.url}/")
                card = page.get_by_test_id("chain-traducao")
                assert "Tradução" in card.inner_text()
                card.screenshot(animations="disabled", path=ARTIFACTS / "chain-dir-card.png")
                # with five chains the fifth tab sits in Gradio's overflow menu ("..."):
                # the landing page's button opens it by name
                page.goto(f"{server.url}/ui/?cadeia=traducao")
                text = page.locator("#traducao-texto textarea")
                text.wait_for()
                assert text.get_attribute("placeholder") == "ex.: Bom dia"
                assert "Texto a traduzir" in page.locator("#traducao-texto").inner_text()
                page.locator("#traducao-destino").get_by_text("espanhol").click()
                page.locator("#traducao-vezes input").fill("2")
                text.fill("Bom dia, sabiá!")
                page.screenshot(animations="disabled", path=ARTIFACTS / "chain-dir-form.png", full_page=True)
                page.locator("#send-traducao").click()
                wait_for(lambda: chat_requests(emu), "the run", page=page)
                body = chat_requests(emu)[-1].body
                assert body is not None
                expected = emu.expected_text(body["messages"])
                assert "Traduza para o espanhol; dê 2 versões." in body["messages"][0]["content"]
                assert body["max_tokens"] == 140
                bots = page.get_by_test_id("bot")
                wait_for(lambda: bots.count() >= 2 and page.locator("#ui-stop").is_disabled(),
                         "the answer", timeout=60, page=page)
                assert bots.first.inner_text().strip() == expected
                page.screenshot(animations="disabled", path=ARTIFACTS / "chain-dir-answer.png", full_page=True)
            finally:
                page.goto("about:blank")
