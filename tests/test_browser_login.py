# ruff: noqa: F811 - pytest fixtures imported from tests/test_browser_security.py
"""A browser on a server with access keys, in a real headless Chromium: the landing
page's snippets carry the key header, the chat UI and a playground send a browser
without the key to a pt-BR 401 page linking to ``/login?next=...``, the login page
looks like the landing page, and a right key lands on the page asked for (that chain's
tab of the UI). Without keys, each chain's "Interface de chat" button opens its tab.
Screenshots go to ``test-artifacts/login-*.png``.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from chains import CHAINS
from tests.browser_support import ARTIFACTS
from tests.test_browser_security import (  # noqa: F401 - the browser and page fixtures
    browser,
    page,
    serve,
    violations,
)
from tests.test_browser_security import pytestmark as browser_marks

pytestmark = [*browser_marks,
              pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]

KEY = "chave-do-navegador-4k9p"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(animations="disabled", path=ARTIFACTS / f"login-{name}.png", full_page=True)


def selected_tab(page: Page) -> str:
    tab = page.get_by_role("tab", selected=True)
    tab.wait_for()
    return tab.inner_text().strip()


@pytest.mark.timeout(240)
def test_keys_mode_sends_the_browser_through_login_and_back(page: Page) -> None:
    with serve(page, MARITACA_CHAINS_API_KEYS=KEY) as (emu, server):
        page.goto(f"{server.url}/")
        snippet = page.get_by_test_id("chain-qa").locator("pre").first.inner_text()
        assert "-H 'X-API-Key: SUA_CHAVE'" in snippet
        python = page.get_by_test_id("chain-qa").locator("pre").nth(1).inner_text()
        assert 'headers={"X-API-Key": "SUA_CHAVE"}' in python
        shot(page, "landing")

        # the playground without the key: the 401 page, in pt-BR, in the landing's look
        response = page.goto(f"{server.url}/story/playground/")
        assert response is not None and response.status == 401
        assert page.locator("html").get_attribute("lang") == "pt-BR"
        page.get_by_text("Entre para continuar").wait_for()
        assert "Unauthorized" not in page.content() and "detail" not in page.content()
        login = page.get_by_role("link", name="Entrar")
        assert login.get_attribute("href") == "/login?next=/story/playground/"
        shot(page, "401-playground")
        assert not violations(page), violations(page)

        # the landing page's button for the Q&A chat: 401 page, login, back on its tab
        page.goto(f"{server.url}/")
        page.get_by_test_id("chain-qa").get_by_role("link", name="Interface de chat").click()
        page.get_by_text("Entre para continuar").wait_for()
        assert page.get_by_role("link", name="Entrar").get_attribute("href") == \
            "/login?next=/ui/%3Fcadeia%3Dqa"
        shot(page, "401-ui")
        page.get_by_role("link", name="Entrar").click()
        page.get_by_label("Chave de acesso").wait_for()
        # styled like the landing page: its background, accent and heading
        style = page.evaluate("""() => [getComputedStyle(document.body).backgroundColor,
            getComputedStyle(document.querySelector('button.submit')).backgroundColor,
            document.querySelector('h1').innerText]""")
        assert style == ["rgb(246, 244, 239)", "rgb(217, 102, 31)", "maritaca-chains"], style
        shot(page, "form")
        assert not violations(page), violations(page)
        page.get_by_label("Chave de acesso").fill("errada")
        page.get_by_role("button", name="Entrar").click()
        page.get_by_text("Chave incorreta").wait_for()
        shot(page, "wrong-key")
        page.get_by_label("Chave de acesso").fill(KEY)  # the form kept where to go
        page.get_by_role("button", name="Entrar").click()
        page.wait_for_url(f"{server.url}/ui/?cadeia=qa")
        page.locator("#send-qa").wait_for()
        page.wait_for_function("() => [...document.querySelectorAll('[role=tab]')]"
                               ".some(t => t.getAttribute('aria-selected') === 'true'"
                               f" && t.innerText.trim() === {CHAINS['qa'].title!r})")
        assert selected_tab(page) == CHAINS["qa"].title
        shot(page, "back-on-the-ui")
    assert not emu.requests  # nothing ran a model on the way


@pytest.mark.timeout(240)
def test_each_chains_chat_button_opens_its_own_tab(page: Page) -> None:
    with serve(page) as (_, server):
        for name in ("summarize", "qa", "story"):
            page.goto(f"{server.url}/")
            page.get_by_test_id(f"chain-{name}").get_by_role(
                "link", name="Interface de chat").click()
            page.locator(f"#send-{name}").wait_for()
            page.wait_for_function(
                "(title) => [...document.querySelectorAll('[role=tab]')].some(t => "
                "t.getAttribute('aria-selected') === 'true' && t.innerText.trim() === title)",
                arg=CHAINS[name].title)
            assert selected_tab(page) == CHAINS[name].title
            if name == "summarize":
                shot(page, "ui-summarize-tab")
