"""The landing page, the offline API docs and the playground's defaults in headless Chromium.

Every request the page makes to anything but the server on 127.0.0.1 is blocked (and
recorded): the pages must work with no network beyond the server. Screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route

from chains import CHAINS
from maritaca import local
from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.browser_support import ARTIFACTS, BROWSER_MARKS
from tests.conftest import RunningServer, emulator_model

pytestmark = BROWSER_MARKS


@pytest.fixture
def offline(page: Page) -> Iterator[list[str]]:
    """Block every request not to loopback; the list of those blocked."""
    blocked: list[str] = []

    def only_loopback(route: Route) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith(
                ("data:", "blob:", "about:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    yield blocked


@contextmanager
def serve(model_name: str | None = None) -> Iterator[RunningServer]:
    """The app on uvicorn at 127.0.0.1 over the emulator (serving ``model_name``)."""
    with MaritacaEmulator(reply_tokens=12) as emu:
        kwargs = {"model": model_name} if model_name else {}
        app = create_app(ServerSettings(_env_file=None),  # type: ignore[call-arg]
                         model=emulator_model(emu, **kwargs))
        with RunningServer(app) as server:
            yield server


@pytest.mark.timeout(120)
def test_landing_page(page: Page, offline: list[str]) -> None:  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    with serve() as server:
        page.goto(f"{server.url}/")
        assert page.get_by_test_id("backend").inner_text() == "modelo próprio"
        assert page.get_by_test_id("model").inner_text() == "sabia-4"
        assert "no ar" in page.get_by_test_id("health").inner_text()
        for name, spec in CHAINS.items():
            card = page.get_by_test_id(f"chain-{name}")
            assert spec.title in card.inner_text()
            assert f"curl -N {server.url}/{name}/text" in card.inner_text()
        page.screenshot(animations="disabled", path=ARTIFACTS / "landing-page.png", full_page=True)
        page.get_by_test_id("chain-story").get_by_role("link", name="Playground").click()
        page.wait_for_url(f"{server.url}/story/playground/")
        page.goto("about:blank")
    assert offline == []


@pytest.mark.timeout(120)
def test_docs_work_offline(page: Page, offline: list[str]) -> None:  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    with serve() as server:
        page.goto(f"{server.url}/docs")
        operation = page.locator(".opblock-summary-path", has_text="/story/text").first
        operation.wait_for()
        assert page.locator(".opblock").count() > 20
        page.screenshot(animations="disabled", path=ARTIFACTS / "docs-offline.png")
        page.goto("about:blank")
    assert offline == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model_name", [None, local.MODEL_NAME])
def test_playground_model_field_shows_its_default(page: Page, offline: list[str],  # noqa: F811
                                                  model_name: str | None) -> None:
    """The Model field shows the served model before anything is picked, and offers only
    the models that answer (the embedded backend's name alone, for SmolLM2)."""
    with serve(model_name) as server:
        page.goto(f"{server.url}/story/playground/")
        model = page.locator('select[id="#/properties/model-input"]')
        model.wait_for()
        expected = model_name or "sabia-4"
        assert model.input_value() == expected
        options = model.locator("option").evaluate_all("options => options.map(o => o.value)")
        assert expected in options
        if model_name:
            assert "sabia-4" not in options
        # the empty form's validation messages, in Portuguese (templates/playground-pt.js)
        page.get_by_text("falta o campo obrigatório 'topic'").wait_for()
        assert page.get_by_text("campo obrigatório", exact=True).is_visible()
        page.screenshot(animations="disabled", path=ARTIFACTS / f"playground-model-{expected}.png")
        page.goto("about:blank")
    assert offline == []
