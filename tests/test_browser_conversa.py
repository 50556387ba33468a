"""The UI's "Conversa" tab in a real headless Chromium, logged in with an access key:
a new conversation from the first message, a second turn that carries the first (the
emulator's recorded request holds it), the conversation reopened from the list after a
reload, another key's list without it, and Excluir (it asks first: Cancelar keeps it). Screenshots:
``test-artifacts/conversa-*.png``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.browser_support import ARTIFACTS, BROWSER_MARKS, TOKEN_DELAY, chat_requests, wait_for
from tests.conftest import RunningServer, emulator_model

pytestmark = [*BROWSER_MARKS, pytest.mark.timeout(240),
              pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]

KEY, OTHER = "chave-conversa-0001", "chave-conversa-0002"
RUN_S = 60  # a loaded 2-core machine may take this long to start a run


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(animations="disabled", path=ARTIFACTS / f"conversa-{name}.png", full_page=True)


def log_in(page: Page, url: str, key: str) -> None:
    page.goto(f"{url}/login?next=/ui/%3Fcadeia%3Dchat")
    page.get_by_label("Chave de acesso").fill(key)
    page.get_by_role("button", name="Entrar").click()
    page.wait_for_url(f"{url}/ui/?cadeia=chat")
    page.locator("#send-chat").wait_for()


def said(page: Page) -> list[tuple[str, str]]:
    """The open conversation's messages: ("user" | "bot", text)."""
    box = page.locator("#chat-conversation")
    # read in one go: a message re-rendered between a lookup and its read is not waited on
    return [(role, text.strip()) for role, text in box.locator(
        "[data-testid=user], [data-testid=bot]").evaluate_all(
        "els => els.map(e => [e.dataset.testid || '', e.innerText])")]


def turn(page: Page, message: str, turns: int) -> None:
    page.locator("#chat-message textarea").fill(message)
    page.locator("#send-chat").click()
    wait_for(lambda: len(said(page)) >= 3 * turns and page.locator("#ui-stop").is_disabled()
             and said(page)[-1][1].startswith("respondido por"),
             f"turn {turns} to end", timeout=RUN_S, page=page)


def listed(page: Page) -> list[str]:
    # in one go: a label removed between a lookup and its read (a deletion) is not waited on
    return [text.strip() for text in page.locator("#chat-threads label").all_inner_texts()]


@contextmanager
def ui_server(page: Page, tmp_path: Path, reply_tokens: int,
              **settings: str) -> Iterator[tuple[MaritacaEmulator, RunningServer]]:
    """The app over the emulator (threads in a SQLite file in ``tmp_path``), served; the
    page leaves it before it stops. Skips where /ui is not mounted."""
    config = ServerSettings(_env_file=None,  # type: ignore[call-arg]
                            MARITACA_CHAINS_DATABASE_URL=f"sqlite:///{tmp_path}/t.db",
                            **settings)
    with MaritacaEmulator(reply_tokens=reply_tokens, token_delay=TOKEN_DELAY) as emu:
        app = create_app(config, model=emulator_model(emu))
        with RunningServer(app) as server:
            if httpx.get(f"{server.url}/ui/", timeout=10, trust_env=False).status_code == 404:
                pytest.skip("/ui is not mounted (gradio missing)")
            try:
                yield emu, server
            finally:
                page.goto("about:blank")


def test_a_conversation_in_the_browser_remembers_reopens_and_is_deleted(
        page: Page, tmp_path: Path) -> None:
    with ui_server(page, tmp_path, 12, MARITACA_CHAINS_API_KEYS=f"{KEY},{OTHER}") as (emu, server):
        log_in(page, server.url, KEY)
        assert page.get_by_role("tab", name="Conversa").get_attribute(
            "aria-selected") == "true"
        assert listed(page) == []
        shot(page, "empty")

        turn(page, "Meu nome é Ana e eu gosto de sabiás.", 1)
        first = said(page)[1][1]
        body = chat_requests(emu)[-1].body
        assert body is not None
        assert first == emu.expected_text(body["messages"])
        assert page.locator("#chat-message textarea").input_value() == ""
        assert "Meu nome é Ana" in page.locator("#chat-title").inner_text()
        wait_for(lambda: len(listed(page)) == 1, "the new conversation in the list",
                 page=page)
        assert listed(page)[0].startswith("Meu nome é Ana e eu gosto de sabiás.")
        assert listed(page)[0].endswith("2 mensagens")

        turn(page, "Qual é o meu nome?", 2)
        sent = chat_requests(emu)[-1].body
        assert sent is not None
        assert [(m["role"], m["content"]) for m in sent["messages"][1:]] == [
            ("user", "Meu nome é Ana e eu gosto de sabiás."), ("assistant", first),
            ("user", "Qual é o meu nome?")]
        assert said(page)[4][1] == emu.expected_text(sent["messages"])
        wait_for(lambda: listed(page)[0].endswith("4 mensagens"), "4 messages",
                 page=page)
        shot(page, "two-turns")

        # a reload: a new page session; the conversation comes back from the list
        page.reload()
        page.locator("#send-chat").wait_for()
        wait_for(lambda: len(listed(page)) == 1, "the list after the reload", page=page)
        assert said(page) == []
        page.locator("#chat-threads label").first.click()
        page.locator("#chat-open").click()
        wait_for(lambda: len(said(page)) == 6, "the reopened conversation", page=page)
        texts = [text for _, text in said(page)]
        assert texts[0] == "Meu nome é Ana e eu gosto de sabiás."
        assert texts[1] == first and texts[3] == "Qual é o meu nome?"
        # each stored answer's line as it was live: who answered, tokens, cost
        assert texts[2].startswith("respondido por sabia-") and "custo estimado R$" in texts[2]
        shot(page, "reopened")

        # a third turn continues the reopened one (its whole history goes up)
        turn(page, "Obrigada!", 3)
        sent = chat_requests(emu)[-1].body
        assert sent is not None and len(sent["messages"]) == 6
        assert len(listed(page)) == 1

        # another key: its own (empty) list
        page.context.clear_cookies()
        log_in(page, server.url, OTHER)
        wait_for(lambda: page.locator("#chat-threads").is_visible(), "the list",
                 page=page)
        page.wait_for_timeout(500)
        assert listed(page) == []

        # back as the first key: Excluir empties the list and the conversation
        page.context.clear_cookies()
        log_in(page, server.url, KEY)
        wait_for(lambda: len(listed(page)) == 1, "the list", page=page)
        page.locator("#chat-threads label").first.click()
        page.locator("#chat-open").click()
        wait_for(lambda: len(said(page)) == 9, "the conversation", page=page)
        # Excluir asks first, naming the conversation: Cancelar keeps it
        page.locator("#chat-delete").click()
        wait_for(lambda: page.locator("#chat-question").is_visible(), "the question",
                 page=page)
        question = page.locator("#chat-question").inner_text()
        assert "Excluir “Meu nome é Ana e eu gosto de sabiás.”?" in question and "não pode ser recuperada" in question
        shot(page, "delete-asked")
        page.locator("#chat-delete-no").click()
        wait_for(lambda: "Nada foi excluído" in page.locator("#ui-status").inner_text()
                 and not page.locator("#chat-question").is_visible(), "the refusal", page=page)
        assert len(listed(page)) == 1 and len(said(page)) == 9
        page.locator("#chat-delete").click()
        wait_for(lambda: page.locator("#chat-delete-yes").is_visible(), "the question",
                 page=page)
        page.locator("#chat-delete-yes").click()
        wait_for(lambda: listed(page) == [] and said(page) == [], "the deletion",
                 page=page)
        assert not page.locator("#chat-question").is_visible()
        assert "Conversa excluída." in page.locator("#ui-status").inner_text()
        shot(page, "deleted")
        threads = httpx.get(f"{server.url}/chat/threads", headers={"X-API-Key": KEY},
                            trust_env=False).json()
        assert threads["total"] == 0


def test_parar_in_a_conversation_keeps_the_cut_answer_marked_incomplete(
        page: Page, tmp_path: Path) -> None:
    with ui_server(page, tmp_path, 400) as (emu, server):
        page.goto(f"{server.url}/ui/?cadeia=chat")
        page.locator("#chat-message textarea").fill("Fale bastante sobre sabiás.")
        page.locator("#send-chat").click()
        wait_for(lambda: len(said(page)) >= 2 and len(said(page)[1][1].split()) >= 10,
                 "ten words of the answer", timeout=RUN_S, page=page)
        request = chat_requests(emu)[0]
        page.locator("#ui-stop").click()
        wait_for(lambda: request.client_disconnected, "the upstream to close",
                 page=page)
        wait_for(lambda: said(page)[-1][1] == "interrompida com Parar",
                 "the stopped line", page=page)
        shown = said(page)[1][1]
        assert request.chunks_sent < 400
        # the session history (hidden on this tab) was left alone
        assert page.locator("#ui-history [data-testid=bot]").count() == 0
        wait_for(lambda: listed(page) and listed(page)[0].endswith("2 mensagens"),
                 "the stopped conversation in the list", page=page)
        shot(page, "stopped")
        listing = httpx.get(f"{server.url}/chat/threads", trust_env=False).json()
        thread = listing["threads"][0]["thread_id"]

        def stored() -> dict:
            return httpx.get(f"{server.url}/chat/threads/{thread}",
                             trust_env=False).json()

        wait_for(lambda: stored()["running_run"] is None, "the turn to be stored",
                 page=page)
        answer = stored()["messages"][-1]
        assert answer["complete"] is False and answer["outcome"] == "cancelled"
        assert answer["text"].startswith(shown[:40])
        page.reload()
        page.locator("#chat-threads label").first.click()
        page.locator("#chat-open").click()
        wait_for(lambda: len(said(page)) == 3, "the reopened conversation", page=page)
        assert said(page)[2][1] == "Não concluída: interrompida antes do fim"

        # deleted elsewhere (the API) while the page still lists it: Excluir says so and
        # the list catches up, nothing to confirm
        assert httpx.delete(f"{server.url}/chat/threads/{thread}",
                            trust_env=False).status_code in (200, 204)
        page.locator("#chat-delete").click()
        wait_for(lambda: "Esta conversa já não existia" in
                 page.locator("#ui-status").inner_text() and listed(page) == [],
                 "the list to catch up", page=page)
        assert not page.locator("#chat-question").is_visible()
