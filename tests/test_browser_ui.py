"""The Gradio UI at /ui/ in a real headless Chromium, over the slow emulator.

Each chain is run from its own form, Parar stops a run (and its upstream request), an
error is one pt-BR line under a history that stays, the summariser takes an uploaded
file. Screenshots of each state go to ``test-artifacts/ui-*.png``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from chains import CHAINS
from maritaca.testing import MaritacaEmulator, Scenario
from tests.browser_support import (
    ARTIFACTS,
    BROWSER_MARKS,
    chat_requests,
    sample_until,
    serve,
    wait_for,
)
from tests.child_servers import needs_redis
from tests.conftest import RunningServer
from tests.test_redis_outage import Redis

pytestmark = [*BROWSER_MARKS,
              pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]  # pandas

TOKENS = 40  # a 2 s answer
LONG_TOKENS = 400  # a 20 s answer, stopped after a few words
RUN_MS = 60_000  # a loaded 2-core machine may take this long to start a run

FORMS = {
    "story": {"#story-topic textarea": "um sabiá que aprendeu a programar",
              "#story-style textarea": "cordel"},
    "qa": {"#qa-question textarea": "Qual é a ave símbolo do Brasil?",
           "#qa-context textarea": "O sabiá-laranjeira é a ave símbolo do Brasil desde 2002."},
    "summarize": {"#summarize-text textarea": "O sabiá-laranjeira canta ao amanhecer. " * 8},
}


def open_ui(page: Page, server: RunningServer) -> None:
    if httpx.get(f"{server.url}/ui/", timeout=10, trust_env=False).status_code == 404:
        pytest.skip("/ui is not mounted (gradio missing)")
    page.goto(f"{server.url}/ui/")
    page.locator("#send-story").wait_for()
    # the page has finished mounting: the history and the model choice are shown (the
    # form's button comes first, while the rest still says "Carregando...")
    page.locator("#ui-history").wait_for(state="visible")
    page.locator("#ui-model").wait_for(state="visible")


def fill(page: Page, name: str, fields: dict[str, str]) -> None:
    """Open the chain's tab and fill its fields. A field filled while the tab was still
    settling could come back empty (a CI run sent the qa form with its question blank
    and its context filled), so each value is checked, again after a pause, and
    filled again until it holds: a person types after the tab has appeared."""
    page.get_by_role("tab", name=CHAINS[name].title, exact=True).click()
    page.locator(f"#send-{name}").wait_for(state="visible")

    def held() -> bool:
        lost = [(selector, value) for selector, value in fields.items()
                if page.locator(selector).input_value() != value]
        for selector, value in lost:
            page.locator(selector).fill(value)
        page.wait_for_timeout(200)
        return not lost and all(page.locator(selector).input_value() == value
                                for selector, value in fields.items())

    wait_for(held, f"the {name} form to keep what was typed", page=page)


def answers(page: Page) -> list[str]:
    """The history's assistant messages (each run: its answer, then its footer line)."""
    return [m.inner_text().strip() for m in page.get_by_test_id("bot").all()]


def status(page: Page) -> str:
    return page.locator("#ui-status").inner_text().strip()


def run_done(page: Page, runs: int) -> None:
    """Wait for the ``runs``-th run's footer line (written when a run ends)."""
    wait_for(lambda: len(answers(page)) >= 2 * runs and page.locator("#ui-stop").is_disabled(),
             f"run {runs} to end", timeout=RUN_MS / 1000, page=page)


def expected_of(emu: MaritacaEmulator, index: int = -1) -> str:
    body = chat_requests(emu)[index].body
    assert body is not None
    return emu.expected_text(body["messages"])


@pytest.mark.timeout(240)
def test_ui_each_chain_from_its_own_form(page: Page, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(page, TOKENS) as (emu, server):
        open_ui(page, server)
        page.screenshot(animations="disabled", path=ARTIFACTS / "ui-start.png", full_page=True)
        for runs, name in enumerate(["story", "qa"], start=1):
            fill(page, name, FORMS[name])
            page.locator(f"#send-{name}").click()
            run_done(page, runs)
            assert answers(page)[-2] == expected_of(emu)
            assert answers(page)[-1].startswith("respondido por sabia-4")
            assert status(page) == "Pronto."
            page.screenshot(animations="disabled", path=ARTIFACTS / f"ui-{name}.png", full_page=True)
        story, qa = (r.body for r in chat_requests(emu))
        assert "cordel" in str(story) and "2002" in str(qa)

        # the summariser, from an uploaded .md file
        document = tmp_path / "relatorio.md"
        document.write_text("# Relatório\n\nO sabiá-laranjeira canta ao amanhecer e ao "
                            "entardecer, sobretudo na primavera.\n", encoding="utf-8")
        fill(page, "summarize", {})
        page.locator("#summarize-file input[type=file]").set_input_files(document)
        box = page.locator("#summarize-text textarea")
        wait_for(lambda: box.input_value().startswith("# Relatório"), "the file's text",
                 timeout=RUN_MS / 1000, page=page)
        assert "Arquivo carregado" in page.locator("#summarize-file-note").inner_text()
        page.get_by_label("tópicos").check()
        page.screenshot(animations="disabled", path=ARTIFACTS / "ui-summarize-upload.png", full_page=True)
        page.locator("#send-summarize").click()
        run_done(page, 3)
        assert answers(page)[-2] == expected_of(emu)
        sent = str(chat_requests(emu)[-1].body)
        assert "sobretudo na primavera" in sent and "tópicos" in sent
        page.screenshot(animations="disabled", path=ARTIFACTS / "ui-summarize.png", full_page=True)
        users = [m.inner_text() for m in page.get_by_test_id("user").all()]
        assert [u.split(" · ")[0] for u in users] == [
            CHAINS[n].title for n in ("story", "qa", "summarize")]


@pytest.mark.timeout(180)
def test_ui_stop_stops_the_run_and_its_upstream(page: Page) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(page, LONG_TOKENS) as (emu, server):
        open_ui(page, server)
        fill(page, "story", FORMS["story"])
        page.locator("#send-story").click()

        def read() -> str:
            texts = answers(page)
            return texts[-1] if texts else ""

        wait_for(lambda: len(read().split()) >= 10, "ten words of the answer",
                 timeout=RUN_MS / 1000, page=page)
        samples = sample_until(read, lambda text: len(text.split()) >= 15, page,
                               "the answer to grow")
        assert len(set(samples)) >= 2, "the answer did not visibly grow"
        request = chat_requests(emu)[0]
        page.locator("#ui-stop").click()
        wait_for(lambda: request.client_disconnected, "the upstream request to close",
                 page=page)
        assert request.chunks_sent < LONG_TOKENS
        wait_for(lambda: status(page).startswith("Interrompida"), "the stopped line", page=page)
        stopped = answers(page)[-2]
        page.wait_for_timeout(1500)  # 30 more tokens' time: nothing may arrive
        assert answers(page)[-2] == stopped and expected_of(emu).startswith(stopped)
        assert answers(page)[-1] == "interrompida com Parar"
        assert page.locator("#send-story").is_enabled() and page.locator("#ui-stop").is_disabled()
        page.screenshot(animations="disabled", path=ARTIFACTS / "ui-stopped.png", full_page=True)
    assert len(chat_requests(emu)) == 1


@pytest.mark.timeout(240)
def test_ui_errors_are_one_portuguese_line_and_the_history_stays(page: Page) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(page, TOKENS) as (emu, server):
        open_ui(page, server)
        fill(page, "story", FORMS["story"])
        page.locator("#send-story").click()
        run_done(page, 1)
        first = answers(page)

        fill(page, "qa", {"#qa-question textarea": "   "})  # blank: refused before sending
        page.locator("#send-qa").click()
        wait_for(lambda: status(page).startswith("Atenção:"), "the refusal", page=page)
        assert status(page) == "Atenção: Preencha o campo «Pergunta» antes de enviar."
        assert answers(page) == first and len(chat_requests(emu)) == 1
        page.screenshot(animations="disabled", path=ARTIFACTS / "ui-error-blank.png", full_page=True)

        emu.enqueue(Scenario.rate_limit(retry_after=3))  # sent, and refused upstream
        fill(page, "story", {})
        page.locator("#send-story").click()
        run_done(page, 2)
        line = "O modelo recebeu pedidos demais: espere 3 s e envie de novo."
        assert status(page) == f"Atenção: {line}"
        assert answers(page)[:2] == first and answers(page)[-2:] == [
            "(nenhum texto chegou)", f"Não concluída: {line}"]
        assert page.get_by_text("Error", exact=True).count() == 0  # no Gradio error badge
        page.screenshot(animations="disabled", path=ARTIFACTS / "ui-error-upstream.png", full_page=True)

        page.locator("#ui-max-tokens input[type=number]").fill("5")  # a cut answer
        page.locator("#ui-max-tokens input[type=number]").press("Enter")
        page.locator("#send-story").click()
        run_done(page, 3)
        assert chat_requests(emu)[-1].body["max_tokens"] == 5  # type: ignore[index]
        assert status(page) == ("A resposta foi cortada no limite de 5 tokens: aumente "
                                "«Máximo de tokens» para recebê-la inteira.")
        assert answers(page)[-1].endswith("cortada no limite de tokens")
        page.screenshot(animations="disabled", path=ARTIFACTS / "ui-cut.png", full_page=True)


@pytest.mark.timeout(240)
def test_ui_a_spent_quota_refuses_the_run_on_the_page_not_the_page_itself(page: Page) -> None:
    """Each run is one request of the key's quota; loading the page, Limpar histórico and
    the page's other calls are not runs. The run over the quota is refused before
    sending, with the same Portuguese line as every refusal, and the history stays."""
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(page, 5, MARITACA_CHAINS_RATE_LIMIT="3/minute") as (emu, server):
        for _ in range(3):  # loading the page three times: no run
            open_ui(page, server)
        fill(page, "story", FORMS["story"])
        for _ in range(2):
            page.locator("#send-story").click()
            run_done(page, 1)
            page.locator("#ui-clear").click()  # Limpar histórico: no run either
            wait_for(lambda: page.get_by_test_id("bot").count() == 0, "the history to clear",
                     page=page)
        page.locator("#send-story").click()
        run_done(page, 1)
        first = answers(page)
        page.locator("#send-story").click()
        wait_for(lambda: status(page).startswith("Atenção:"), "the refusal", page=page)
        line = status(page)
        assert line.startswith("Atenção: Limite de pedidos desta chave de acesso (3 por minuto) "
                               "atingido; ele se renova em "), line
        assert line.endswith("s): espere e envie de novo."), line
        assert answers(page) == first and len(chat_requests(emu)) == 3  # nothing was sent
        assert page.get_by_text("Error", exact=True).count() == 0  # no Gradio error toast
        assert page.get_by_text("Erro", exact=True).count() == 0  # nor its badge
        assert page.locator("#send-story").is_enabled() and page.locator("#ui-stop").is_disabled()
        page.screenshot(animations="disabled", path=ARTIFACTS / "ui-quota-spent.png", full_page=True)


@needs_redis
@pytest.mark.timeout(240)
def test_ui_a_run_while_the_quotas_redis_is_down_says_so_on_the_page(page: Page,
                                                                      tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    redis = Redis(tmp_path)
    redis.start()
    try:
        with serve(page, 5, MARITACA_CHAINS_RATE_LIMIT="100/minute",
                   MARITACA_CHAINS_REDIS_URL=redis.url) as (emu, server):
            open_ui(page, server)
            fill(page, "story", FORMS["story"])
            page.locator("#send-story").click()
            run_done(page, 1)
            first = answers(page)
            redis.stop()
            page.locator("#send-story").click()
            wait_for(lambda: status(page).startswith("Atenção:"), "the refusal", page=page)
            assert status(page).startswith("Atenção: O Redis está fora de alcance"), status(page)
            assert "redis://" not in page.content()  # the URL (and its password) stays hidden
            assert answers(page) == first and len(chat_requests(emu)) == 1
            page.screenshot(animations="disabled", path=ARTIFACTS / "ui-redis-down.png", full_page=True)
    finally:
        redis.stop()
