"""The attacker's web page in a real headless Chromium, and the hardened pages still working.

A page served from another local origin (another port on 127.0.0.1) tries everything a
page can send without the server's consent: ``fetch`` with ``mode: "no-cors"``
(``text/plain``, a type-less Blob, a form), a CORS ``fetch`` with JSON, a WebSocket,
and framing the server's pages. A DNS-rebinding page (``evil.test`` mapped to 127.0.0.1
by Chromium's resolver rules, the page itself served by interception) tries the same as
"same-origin". The emulator must see no request at all; the same requests from the
server's own pages do reach it (so the test can fail). Then the landing page, the login
form, /docs, the playground (a run) and the Gradio UI load with their CSP and no
violation. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from chains import CHAINS
from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.browser_support import (
    ARTIFACTS,
    BROWSER_MARKS,
    chat_requests,
    launched,
    new_page,
    wait_for,
)
from tests.conftest import RunningServer, emulator_model

pytestmark = BROWSER_MARKS

REBINDING_NAME = "evil.test"

# Everything a page may send cross-origin without a preflight, plus the ones that need
# one, and a WebSocket (no CORS at all). Each outcome is recorded, none can be read.
ATTACK = """
async (target) => {
  const results = {};
  const body = JSON.stringify({input: {topic: "Brasil"}});
  const tries = {
    text_plain: () => fetch(target + "/story/invoke", {method: "POST", mode: "no-cors",
                            headers: {"content-type": "text/plain"}, body}),
    typeless_blob: () => fetch(target + "/story/stream", {method: "POST", mode: "no-cors",
                               body: new Blob([body])}),
    text_face: () => fetch(target + "/story/text", {method: "POST", mode: "no-cors",
                           body: '{"topic": "Brasil"}'}),
    form: () => fetch(target + "/story/invoke", {method: "POST", mode: "no-cors",
                      body: new URLSearchParams({input: "Brasil"})}),
    cors_json: () => fetch(target + "/story/invoke", {method: "POST",
                           headers: {"content-type": "application/json"}, body}),
  };
  for (const [name, attempt] of Object.entries(tries)) {
    try { const r = await attempt(); results[name] = "sent:" + r.type + ":" + r.status; }
    catch (e) { results[name] = "blocked:" + e.name; }
  }
  results.websocket = await new Promise((resolve) => {
    const ws = new WebSocket(target.replace("http", "ws") + "/story/ws");
    ws.onopen = () => { ws.send("Brasil"); setTimeout(() => resolve("open"), 1500); };
    ws.onerror = () => resolve("error");
    ws.onclose = (e) => resolve("closed:" + e.code);
  });
  return results;
}
"""

FRAME = """(target) => new Promise((resolve) => {
  const frame = document.createElement("iframe");
  frame.src = target + "/";
  frame.onload = () => resolve();
  document.body.appendChild(frame);
})"""

# Every CSP violation a page causes, as the page sees it
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(e.violatedDirective + " " + e.blockedURI));
"""


def attacker_page(_: Any) -> HTMLResponse:
    return HTMLResponse("<!doctype html><html><head><title>gatinhos</title></head><body>"
                        "<h1>Fotos de gatinhos</h1></body></html>")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium resolving the rebinding name to 127.0.0.1, and without Private/Local
    Network Access checks (as Firefox, Safari, older Chromium): the server alone must hold."""
    with launched(f"--host-resolver-rules=MAP {REBINDING_NAME} 127.0.0.1",
                  "--disable-features=BlockInsecurePrivateNetworkRequests,"
                  "PrivateNetworkAccessSendPreflights,LocalNetworkAccessChecks") as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page that records every CSP violation it meets (``violations``)."""
    with new_page(browser, RECORD_VIOLATIONS) as opened:
        yield opened


@contextmanager
def serve(page: Page, **env: Any) -> Iterator[tuple[MaritacaEmulator, RunningServer]]:
    with MaritacaEmulator(reply_tokens=30, token_delay=0.02) as emu:
        app = create_app(ServerSettings(_env_file=None, **env), model=emulator_model(emu))  # type: ignore[call-arg]
        with RunningServer(app) as server:
            try:
                yield emu, server
            finally:
                page.goto("about:blank")


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(animations="disabled", path=ARTIFACTS / f"security-{name}.png", full_page=True)


@pytest.mark.timeout(120)
def test_a_page_from_another_origin_cannot_drive_the_server(page: Page) -> None:
    with serve(page, MARITACA_CHAINS_UI=False) as (emu, server), \
            RunningServer(Starlette(routes=[Route("/", attacker_page)])) as evil:
        page.goto(evil.url)
        results = page.evaluate(ATTACK, server.url)
        page.evaluate(FRAME, server.url)
        framed = page.frames[-1]
        framed_text = framed.locator("body").inner_text() if framed.url.startswith("http") else ""
        shot(page, "cross-origin-attacker")
        page.wait_for_timeout(500)
        assert not emu.requests, f"the attacker's page reached the upstream: {results}"
        assert results["websocket"] != "open", results
        assert results["cors_json"].startswith("blocked"), results  # preflight refused
        # frame-ancestors 'none': Chromium shows its error page instead of ours
        assert "maritaca" not in framed_text.lower(), (framed.url, framed_text[:200])

        # the same requests from the server's own page do reach the model
        page.goto(f"{server.url}/healthz")
        own = page.evaluate(ATTACK, server.url)
        wait_for(lambda: len(chat_requests(emu)) >= 2, "the same-origin runs", page=page)
    assert own["cors_json"] == "sent:basic:200" and own["websocket"] == "open", own
    assert own["text_plain"] == "sent:basic:415", own


@pytest.mark.timeout(120)
@pytest.mark.parametrize("opened", [False, True], ids=["default", "allowed-hosts-star"])
def test_a_rebinding_page_cannot_drive_the_server(page: Page, opened: bool) -> None:
    """The attacker's name now resolves to 127.0.0.1: its page is same-origin with the
    server as far as the browser knows; only the Host allow-list stands in the way (with
    ``MARITACA_CHAINS_ALLOWED_HOSTS=*`` the same page does reach the model)."""
    env = {"MARITACA_CHAINS_ALLOWED_HOSTS": "*"} if opened else {}
    with serve(page, MARITACA_CHAINS_UI=False, **env) as (emu, server):
        port = server.url.rsplit(":", 1)[1]
        origin = f"http://{REBINDING_NAME}:{port}"
        page.route(f"{origin}/", lambda route: route.fulfill(
            status=200, content_type="text/html",
            body="<!doctype html><h1>Fotos de gatinhos</h1>"))
        page.goto(f"{origin}/")  # served as if before the DNS answer changed
        results = page.evaluate(ATTACK, origin)
        status = page.evaluate("(u) => fetch(u).then(r => r.status)", f"{origin}/healthz")
        page.wait_for_timeout(500)
        if opened:
            assert status == 200 and results["websocket"] == "open", results
            assert len(chat_requests(emu)) >= 2, "the simulated rebinding did not work"
            return
    assert status == 400, "the server answered a Host it does not serve"
    assert not emu.requests, f"the rebinding page reached the upstream: {results}"
    assert results["websocket"] != "open"


# ------------------------------------------------------------------- hardened pages work

def violations(page: Page) -> list[str]:
    return list(page.evaluate("window.__violations"))


@pytest.mark.timeout(180)
def test_pages_work_under_their_policy(page: Page) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with serve(page) as (emu, server):
        for path, ready in [("/", "h1"), ("/login", "form"), ("/docs", ".swagger-ui .info"),
                            ("/ui/", "gradio-app textarea")]:
            response = page.goto(f"{server.url}{path}")
            assert response is not None and response.status == 200, path
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            page.locator(ready).first.wait_for()
            page.wait_for_timeout(500)
            shot(page, path.strip("/") or "index")
            assert not violations(page), (path, violations(page))

        name = "story"
        page.goto(f"{server.url}/{name}/playground/")
        page.locator(f'[id="#/properties/{CHAINS[name].main_field}-input"]').fill("sabiá")
        page.get_by_role("button", name="Iniciar").click()
        wait_for(lambda: chat_requests(emu), "the playground's run", page=page)
        request = chat_requests(emu)[0]
        assert request.body is not None
        # the form pre-fills max_tokens 0: the short story's budget from story.yaml
        assert request.body["max_tokens"] == 300
        expected = emu.expected_text(request.body["messages"])
        output = page.locator("h2:text-is('Resposta') + div")
        wait_for(lambda: output.count() and output.inner_text().strip() == expected,
                 "the playground's output", page=page)
        shot(page, "playground")
        assert not violations(page), violations(page)
    assert not errors, errors


@pytest.mark.timeout(120)
def test_browser_login_sets_the_cookie_without_the_key_in_any_url(page: Page) -> None:
    key = "chave-de-teste-9f3k"
    seen_urls: list[str] = []
    page.on("request", lambda request: seen_urls.append(request.url))
    with serve(page, MARITACA_CHAINS_API_KEYS=key, MARITACA_CHAINS_UI=False) as (_, server):
        page.goto(f"{server.url}/login")
        page.get_by_label("Chave de acesso").fill("errada")
        page.get_by_role("button", name="Entrar").click()
        page.get_by_text("Chave incorreta").wait_for()
        assert not page.context.cookies()
        page.get_by_label("Chave de acesso").fill(key)
        page.get_by_role("button", name="Entrar").click()
        page.wait_for_url(f"{server.url}/")
        cookies = page.context.cookies()
        assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]
        assert key not in cookies[0]["value"]
        response = page.goto(f"{server.url}/story/playground/")
        assert response is not None and response.status == 200
        shot(page, "after-login")
    assert not [u for u in seen_urls if key in u]
