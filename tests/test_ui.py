"""The Gradio UI's runs over the emulator: chat_fn (what each form calls), its pt-BR lines,
the model choices it offers, and Gradio's own cancel over HTTP.

The page itself, in a browser, is tests/test_browser_ui.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import subprocess
import sys
import time
from itertools import pairwise
from typing import Any

import pytest

from chains import build_chains
from maritaca import ChatMaritaca, local
from maritaca.models import catalogue_names
from maritaca.testing import MaritacaEmulator, Scenario
from maritaca_chains import create_app
from maritaca_chains.backend import ServedModel
from maritaca_chains.faces import chat_fn
from maritaca_chains.faces.gradio_idle_poll import IDLE_PACE
from maritaca_chains.faces.ui_run import RunUpdate
from maritaca_chains.faces.ui_text import run_footer
from maritaca_chains.ledger import format_brl
from maritaca_chains.settings import ServerSettings
from tests.conftest import SLOW_TOKENS, emulator_model, loopback_client, wait_disconnected

pytestmark = pytest.mark.timeout(60)



async def run(respond, chain: str, fields: dict, **settings) -> list[RunUpdate]:
    return [update async for update in respond(chain, fields, **settings)]


def sent_text(emu: MaritacaEmulator) -> str:
    return json.dumps(emu.requests[-1].body, ensure_ascii=False)


def expected(emu: MaritacaEmulator) -> str:
    body = emu.requests[-1].body
    assert body is not None
    return emu.expected_text(body["messages"])


def assert_one_friendly_line(line: str) -> None:
    assert line and "\n" not in line
    for leak in ("pydantic", "http", "Traceback", "Error", "{", "test-key"):
        assert leak not in line, line


async def test_ui_page_serves(client):
    page = await client.get("/ui/")
    assert page.status_code == 200 and "gradio" in page.text.lower()


@pytest.mark.parametrize(("chain", "fields", "sent"), [
    ("story", {"topic": "Pantanal", "style": "cordel", "length": "média"},
     ["Pantanal", "cordel", "três a cinco parágrafos"]),
    ("qa", {"question": "Qual é a capital?", "context": "A capital do Brasil é Brasília."},
     ["Qual é a capital?", "<contexto>", "A capital do Brasil é Brasília."]),
    ("summarize", {"text": "O sabiá canta ao amanhecer. " * 5, "length": "curto",
                   "format": "tópicos"}, ["O sabiá canta", "lista de tópicos"]),
])
async def test_ui_each_form_streams_its_chain(app, emu, chain, fields, sent):
    updates = await run(chat_fn(app.state.chains), chain, fields)
    assert updates[0].sent and updates[0].answer == "" and not updates[0].done
    answers = [u.answer for u in updates[1:-1]]
    assert len(answers) > 3
    assert all(b.startswith(a) and len(b) > len(a) for a, b in pairwise(answers))
    last = updates[-1]
    assert last.done and not last.error and not last.cut and last.status == "Pronto."
    assert last.answer == answers[-1] == expected(emu)
    assert last.model_name and last.model_name.startswith("sabia-4")
    assert last.tokens and last.cost_brl and 0 < last.cost_brl < 0.1  # priced by the catalogue
    for words in sent:
        assert words in sent_text(emu)


@pytest.mark.parametrize(("chain", "fields", "label"), [
    ("story", {"topic": "   ", "style": "cordel"}, "Tema"),
    ("qa", {"question": "\n\t", "context": "Algum contexto."}, "Pergunta"),
    ("summarize", {"text": "", "format": "tópicos"}, "Texto"),
])
async def test_ui_refuses_blank_fields_before_sending(app, emu, chain, fields, label):
    updates = await run(chat_fn(app.state.chains), chain, fields)
    assert len(updates) == 1 and not updates[0].sent and updates[0].done
    assert updates[0].error == f"Preencha o campo «{label}» antes de enviar."
    assert emu.requests == []


async def test_ui_blank_optional_fields_take_their_defaults(app, emu):
    respond = chat_fn(app.state.chains)
    assert (await run(respond, "story", {"topic": "Brasil", "style": "  "}))[-1].done
    assert "Estilo: livre." in sent_text(emu)
    assert not (await run(respond, "qa", {"question": "Oi?", "context": " \n "}))[-1].error
    assert "<contexto>" not in sent_text(emu)  # the no-context prompt


@pytest.mark.parametrize(("fields", "line"), [
    ({"topic": "x" * 501}, "O campo «Tema» está longo demais (no máximo 500 caracteres): "
                           "encurte-o e envie de novo."),
    ({"topic": "x", "length": "enorme"}, "Escolha uma das opções do campo «Tamanho»."),
])
async def test_ui_invalid_field_is_one_portuguese_line(app, emu, fields, line):
    updates = await run(chat_fn(app.state.chains), "story", fields)
    assert [u.error for u in updates] == [line]
    assert_one_friendly_line(line)
    assert emu.requests == []


async def test_ui_model_temperature_and_length_reach_the_model(app, emu):
    updates = await run(chat_fn(app.state.chains), "story", {"topic": "Brasil"},
                        model="sabiazinho-4", temperature=0.2, max_tokens=5)
    body = emu.requests[-1].body
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("sabiazinho-4", 0.2, 5)
    last = updates[-1]
    assert last.cut and last.model_name and last.model_name.startswith("sabiazinho-4")
    assert last.status == ("A resposta foi cortada no limite de 5 tokens: aumente «Máximo de "
                           "tokens» para recebê-la inteira.")
    assert expected(emu).startswith(last.answer) and len(last.answer) < len(expected(emu))
    assert "cortada no limite de tokens" in run_footer(last.model_name, last.tokens,
                                                          last.cost_brl, last.cut)


async def test_ui_automatic_length_is_the_chains_budget(app, emu):
    updates = await run(chat_fn(app.state.chains), "story", {"topic": "Brasil"},
                        max_tokens=None)
    assert emu.requests[-1].body["max_tokens"] == 300  # prompts/story.yaml: 100 + curta's 200
    assert not updates[-1].cut


@pytest.mark.parametrize(("scenario", "line"), [
    (Scenario.rate_limit(retry_after=2), "O modelo recebeu pedidos demais: espere 2 s e "
                                         "envie de novo."),
    (Scenario.unauthorized(), "A Maritaca recusou a chave de API: confira "
                              "`MARITACA_API_KEY` no servidor."),
    (Scenario.context_too_long(), "O texto passa do que o modelo consegue ler de uma vez: "
                                  "encurte-o ou escolha um modelo com mais contexto."),
])
async def test_ui_upstream_errors_are_one_portuguese_line(app, emu, caplog, scenario, line):
    emu.enqueue(scenario)
    updates = await run(chat_fn(app.state.chains), "story", {"topic": "Brasil"})
    assert updates[0].sent and updates[-1].done
    assert updates[-1].error == updates[-1].status == line
    assert_one_friendly_line(line.replace("`MARITACA_API_KEY`", ""))
    logged = [r for r in caplog.records if r.name == "maritaca_chains.faces"]
    assert len(logged) == 1 and logged[0].exc_info is None  # one log line, no traceback


async def test_ui_error_mid_stream_keeps_the_partial_answer(app, emu):
    emu.enqueue(Scenario.error_event(after_chunks=3, message="modelo sobrecarregado"))
    updates = await run(chat_fn(app.state.chains), "story", {"topic": "Brasil"})
    last = updates[-1]
    assert last.error == "O modelo interrompeu a resposta no meio: tente de novo."
    assert last.answer and expected(emu).startswith(last.answer)


async def test_ui_long_summary_shows_progress_then_the_summary(emu):
    chains = build_chains(emulator_model(emu), context_tokens=600)  # parts of ~1500 chars
    text = " ".join(f"Parágrafo {i}: o sabiá-laranjeira canta nas manhãs de setembro."
                    for i in range(80))
    updates = await run(chat_fn(chains), "summarize", {"text": text})
    progress = [u.status for u in updates if u.status.startswith("Texto longo")]
    total = len([r for r in emu.requests if r.path.endswith("/chat/completions")]) - 1
    assert total >= 3
    assert progress[0] == (f"Texto longo: resumindo por partes, 0 de {total} prontas; "
                           "depois vem o resumo final…")
    assert f"{total} de {total} prontas" in progress[-1]
    assert "Texto longo" not in updates[-1].answer and updates[-1].status == "Pronto."
    assert updates[-1].answer == expected(emu)


async def test_ui_closing_a_run_closes_the_upstream(slow):
    emu, server = slow
    respond = chat_fn(server.config.app.state.chains)
    updates = respond("story", {"topic": "Brasil"})
    async for update in updates:
        if len(update.answer.split()) >= 3:
            break
    await updates.aclose()
    await asyncio.to_thread(wait_disconnected, emu.requests[-1], time.monotonic())
    assert emu.requests[-1].chunks_sent < SLOW_TOKENS // 2


@pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # pandas deprecations
def test_ui_stop_cancels_the_run_and_closes_the_upstream(slow, monkeypatch):
    """Gradio's own cancel (what Parar calls) over HTTP, via gradio_client."""
    from gradio_client import Client

    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    emu, server = slow
    client = Client(f"{server.url}/ui/", verbose=False, analytics_enabled=False)
    try:
        job = client.submit([], "sabia-4", 0.7, 0, "Brasil", "", "curta", api_name="/story")
        deadline = time.monotonic() + 15
        while len(job.outputs()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(job.outputs()) >= 4
        job.cancel()
        stopped_at = time.monotonic()
        wait_disconnected(emu.requests[-1], stopped_at)
    finally:
        client.close()


def test_ui_offers_the_models_that_answer(app):
    choices = app.state.served.model_choices
    assert choices[0] == "sabia-4" and set(choices) == set(catalogue_names())
    with loopback_client(app) as http:
        config = http.get("/ui/config").json()
    dropdowns = [c["props"] for c in config["components"] if c.get("type") == "dropdown"]
    assert [[choice[1] for choice in d["choices"]] for d in dropdowns] == [choices]
    assert dropdowns[0]["value"] == "sabia-4"


def test_embedded_backend_offers_only_its_model():
    served = ServedModel(ChatMaritaca(base_url="http://127.0.0.1:9/v1", api_key="x",
                                      model=local.MODEL_NAME), "local", local.LocalBackend())
    assert served.model_choices == [local.MODEL_NAME]


def test_costs_read_as_reais():
    assert format_brl(0.0012) == "R$ 0,0012"
    assert format_brl(1234.5) == "R$ 1.234,50"
    assert run_footer("sabia-4", 120, 0.00036, False) == (
        "respondido por sabia-4 · 120 tokens · custo estimado R$ 0,00036")


def test_no_gradio_no_ui(emu, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    app = create_app(ServerSettings(_env_file=None), model=emulator_model(emu))  # type: ignore[call-arg]
    assert "gradio is not installed" in caplog.text
    with loopback_client(app) as http:
        assert http.get("/ui/").status_code == 404
        assert http.post("/story/text", json={"topic": "Brasil"}).text == expected(emu)


# ------------------------------------------------------- what the UI does to the process

GLOBAL_STATE_PROBE = r"""
import asyncio, json, os, sys, threading, warnings
hosts = []
def audit(event, args):
    if event == "socket.getaddrinfo":
        hosts.append(str(args[0]))
    elif event == "socket.connect" and isinstance(args[1], tuple):
        hosts.append(str(args[1][0]))
sys.addaudithook(audit)
env = dict(os.environ)
import fastapi, gradio, langchain_core.runnables, langserve, pydantic  # their own filters
filters = list(warnings.filters)
from maritaca import ChatMaritaca
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
app = create_app(ServerSettings(_env_file=None),
                 model=ChatMaritaca(api_key="k", base_url="http://127.0.0.1:9/v1"))
async def serve_a_while():
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.5)
asyncio.run(serve_a_while())
for thread in threading.enumerate():  # a telemetry or version check would run in one
    if thread is not threading.current_thread() and not thread.daemon:
        thread.join(10)
print(json.dumps({
    "ui": any(getattr(r, "path", "") == "/ui" for r in app.routes),
    "filters": [repr(f) for f in warnings.filters if f not in filters],
    "env": sorted(k for k in {*env, *os.environ} if env.get(k) != os.environ.get(k)),
    "hosts": hosts}))
"""


def test_the_ui_leaves_the_process_alone_and_contacts_no_host():
    """Importing the server and serving the UI sets no environment variable and no warning
    filter, and Gradio sends no telemetry nor version check (it would look up
    api.gradio.app and huggingface.co)."""
    out = subprocess.run([sys.executable, "-c", GLOBAL_STATE_PROBE], capture_output=True,
                         text=True, timeout=120, check=True,
                         env={k: v for k, v in os.environ.items()
                              if not k.startswith(("GRADIO_", "HF_", "MARITACA"))})
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["ui"], out.stderr
    assert seen["filters"] == []
    # Gradio itself sets this one for a Blocks built with analytics off (ours is)
    assert seen["env"] == ["HF_HUB_DISABLE_TELEMETRY"]
    assert all(host in ("127.0.0.1", "localhost", "::1") for host in seen["hosts"]), seen


class CountingSelector(selectors.DefaultSelector):
    """The event loop's selector, counting how often the loop waits (= wakes up)."""

    waits = 0

    def select(self, timeout: float | None = None) -> list[Any]:
        self.waits += 1
        return super().select(timeout)


def idle_wakeups(app: Any, seconds: float = 1.0) -> int:
    """How often the server's event loop wakes up in ``seconds``, started, nobody connected."""
    selector = CountingSelector()
    loop = asyncio.SelectorEventLoop(selector)

    async def idle() -> int:
        async with app.router.lifespan_context(app):
            await asyncio.sleep(0.3)
            start = selector.waits
            await asyncio.sleep(seconds)
            return selector.waits - start

    try:
        return loop.run_until_complete(idle())
    finally:
        left = asyncio.all_tasks(loop)  # Gradio's queue loops outlive the lifespan
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.close()


def ui_blocks(app: Any) -> Any:
    return next(r.app.get_blocks() for r in app.routes if getattr(r, "path", "") == "/ui")


def test_an_idle_ui_wakes_the_server_rarely(emu):
    """Why the UI touches Gradio's private queue settings (faces/gradio_idle_poll.py):
    at Gradio's own pace an idle server wakes up over a thousand times a second. Fails
    if Gradio renames those settings, stops reading them, or slows them itself."""
    import gradio as gr

    gradio_pace = {name: getattr(gr.Blocks(analytics_enabled=False)._queue, name)
                   for name in IDLE_PACE}
    assert all(gradio_pace[name] < IDLE_PACE[name] for name in IDLE_PACE), gradio_pace
    paced = create_app(ServerSettings(_env_file=None), model=emulator_model(emu))  # type: ignore[call-arg]
    assert all(getattr(ui_blocks(paced)._queue, n) == s for n, s in IDLE_PACE.items())
    gradios = create_app(ServerSettings(_env_file=None), model=emulator_model(emu))  # type: ignore[call-arg]
    vars(ui_blocks(gradios)._queue).update(gradio_pace)
    ours, theirs = idle_wakeups(paced), idle_wakeups(gradios)
    # each sleep is two turns of the loop: 2 x (20 + 10) expected; Gradio's pace, 2 x 1100
    assert ours <= 90, f"{ours} wake-ups in an idle second"
    assert theirs > 5 * ours, (ours, theirs)


@pytest.mark.parametrize("zone_data", [True, False], ids=["zoneinfo", "no-zone-data"])
def test_saved_conversations_are_listed_in_brasilia_time(zone_data, monkeypatch):
    """Stored in UTC, listed as a Brazilian reads the clock (the list's note names the
    zone), also where the system has no zone data."""
    from zoneinfo import ZoneInfoNotFoundError

    from maritaca_chains import brasilia_time
    from maritaca_chains.faces import ui_threads

    if not zone_data:
        def missing(key: str) -> Any:
            raise ZoneInfoNotFoundError(key)

        monkeypatch.setattr(brasilia_time, "ZoneInfo", missing)
        monkeypatch.setattr(brasilia_time, "BRASILIA", brasilia_time._brasilia())
    entry = ui_threads.thread_label({"title": "Sabiás", "message_count": 2,
                                     "updated_at": "2026-12-05T01:30:00.000+00:00"})
    assert entry == "Sabiás · 04/12/2026 às 22:30 · 2 mensagens"


def test_a_spent_quota_says_when_it_renews_not_that_the_server_failed():
    from limits import parse

    from maritaca_chains.error_responses import describe_error
    from maritaca_chains.faces.ui_text import error_line
    from maritaca_chains.quota_exceeded import QuotaExceeded

    line = error_line("story", describe_error(QuotaExceeded("tokens", parse("1000/day"),
                                                            time.time() + 90)))
    assert line.startswith("Orçamento de tokens desta chave de acesso (1000 por dia, "
                           "entrada + saída) esgotado; ele se renova em ")
    assert "(daqui a 90 s): espere e envie de novo." in line


def test_a_spent_quota_says_when_it_renews_in_brasilia_time():
    """The pt-BR message gives the reset as a Brazilian reads the clock; the English one
    (and the logs) keep UTC."""
    from datetime import UTC, datetime

    from limits import parse

    from maritaca_chains.quota_exceeded import QuotaExceeded

    reset = datetime(2026, 12, 6, 1, 30, 15, tzinfo=UTC).timestamp()
    spent = QuotaExceeded("requests", parse("60/minute"), reset)
    assert "se renova em 05/12/2026 às 22:30:15, horário de Brasília (daqui a " \
        in spent.message("pt")
    assert "resets at 2026-12-06T01:30:15Z (in " in spent.message("en")
    assert str(spent) == spent.message("en")  # what the logs get
