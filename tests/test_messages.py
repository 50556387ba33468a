"""Who reads an error: programs its stable English ``type``, people its message, in pt-BR
unless they ask for English; and the browser's way in with access keys (the 401 page,
``/login?next=``, no open redirect), the landing page's key snippets, the favicon, and
the routes /docs lists."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from maritaca.testing import MaritacaEmulator, Scenario
from maritaca_chains import create_app
from maritaca_chains.login_pages import safe_next
from maritaca_chains.messages import MESSAGES, language
from maritaca_chains.pages import landing_page
from maritaca_chains.settings import ServerSettings
from tests.conftest import emulator_model

KEY = "chave-de-teste-7h2m"
ENGLISH = {"accept-language": "en-US,en;q=0.9"}
BROWSER = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def client_for(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                             base_url="http://127.0.0.1:8000", timeout=30)


@pytest.fixture
def keyed(emu: MaritacaEmulator) -> object:
    return create_app(ServerSettings(_env_file=None, MARITACA_CHAINS_API_KEYS=KEY,  # type: ignore[call-arg]
                                     MARITACA_CHAINS_UI=False), model=emulator_model(emu))


@pytest.fixture
def app(emu: MaritacaEmulator) -> object:
    """The app without keys (and without the Gradio UI, which takes seconds to build)."""
    return create_app(ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False),  # type: ignore[call-arg]
                      model=emulator_model(emu))


@pytest.mark.parametrize(("header", "expected"), [
    (None, "pt"), ("", "pt"), ("pt-BR,pt;q=0.9,en;q=0.8", "pt"), ("en", "en"),
    ("en-US,en;q=0.9", "en"), ("en-US,pt-BR;q=0.5", "en"), ("fr-FR,en;q=0.5", "en"),
    ("fr-FR,de;q=0.5", "pt"), ("pt;q=0.3,en;q=0.8", "en"), ("en;q=0,pt;q=0.1", "pt"),
    ("en;q=bad", "pt"), ("pt-BR, en", "pt"),
])
def test_language_follows_accept_language(header, expected):
    assert language(header) == expected


def test_every_message_has_both_languages_filled_the_same_way():
    import string

    for code, texts in MESSAGES.items():
        assert texts["pt"], code
        if texts["en"]:  # an empty English text falls back to pt (the reasons' sub-parts)
            fields = [{f for _, f, _, _ in string.Formatter().parse(t) if f}
                      for t in (texts["pt"], texts["en"])]
            assert fields[0] >= fields[1], code


async def test_refusals_keep_their_type_and_speak_the_callers_language(keyed):
    async with client_for(keyed) as http:
        pt = await http.post("/story/invoke", json={"input": {"topic": "Brasil"}})
        en = await http.post("/story/invoke", json={"input": {"topic": "Brasil"}},
                             headers=ENGLISH)
        host = await http.get("/healthz", headers={"host": "evil.example"})
    assert pt.status_code == en.status_code == 401
    assert pt.json()["type"] == en.json()["type"] == "access_key_required"
    assert pt.json()["detail"].startswith("Falta a chave de acesso")
    assert en.json()["detail"].startswith("Missing or wrong access key")
    assert pt.headers["www-authenticate"] == "Bearer"
    assert host.status_code == 400 and host.json()["type"] == "host_not_allowed"
    assert "não atende" in host.json()["detail"]


async def test_upstream_errors_and_the_cut_line_speak_the_callers_language(app, emu):
    async with client_for(app) as http:
        emu.enqueue(Scenario.rate_limit(retry_after=2))
        pt = await http.post("/story/invoke", json={"input": {"topic": "Brasil"}})
        emu.enqueue(Scenario.rate_limit(retry_after=2))
        en = await http.post("/story/invoke", json={"input": {"topic": "Brasil"}},
                             headers=ENGLISH)
        envelope = {"input": {"topic": "Brasil"}, "config": {"configurable": {"max_tokens": 3}}}
        cut_pt = (await http.post("/story/text", json=envelope)).text
        cut_en = (await http.post("/story/text", json=envelope, headers=ENGLISH)).text
    assert pt.status_code == en.status_code == 429
    assert pt.json()["type"] == en.json()["type"] == "rate_limit"
    assert pt.json()["detail"].startswith("O modelo falhou (rate_limit): pedidos demais")
    assert en.json()["detail"].startswith("Upstream model failed (rate_limit)")
    assert "\n[TRUNCATED] a resposta chegou a max_tokens=3 e foi cortada" in cut_pt
    assert "\n[TRUNCATED] the answer reached max_tokens=3 and was cut" in cut_en


async def test_a_browser_without_the_key_gets_the_login_page_link(keyed):
    async with client_for(keyed) as http:
        page = await http.get("/story/playground/?x=1", headers=BROWSER)
        program = await http.get("/story/playground/")
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert "Entre para continuar" in page.text and "lang='pt-BR'" in page.text
    assert "/login?next=/story/playground/%3Fx%3D1" in page.text
    assert program.status_code == 401 and program.json()["type"] == "access_key_required"


@pytest.mark.parametrize(("asked", "lands"), [
    ("/ui/?cadeia=qa", "/ui/?cadeia=qa"), ("/story/playground/", "/story/playground/"),
    ("//evil.example/x", "/"), ("/\\evil.example", "/"), ("https://evil.example/", "/"),
    ("javascript:alert(1)", "/"), ("", "/"), ("/ok\r\nSet-Cookie: x=1", "/"),
])
async def test_login_lands_on_next_only_inside_this_site(keyed, asked, lands):
    assert safe_next(asked) == lands
    async with client_for(keyed) as http:
        form = await http.get("/login", params={"next": asked})
        done = await http.post("/login", data={"key": KEY, "next": asked})
    assert form.status_code == 200 and "name='next' value='" in form.text
    assert done.status_code == 303 and done.headers["location"] == lands


async def test_landing_snippets_carry_the_key_header_only_with_keys(keyed, app):
    async with client_for(keyed) as http:
        with_keys = (await http.get("/")).text
    async with client_for(app) as http:
        without = (await http.get("/")).text
    assert with_keys.count("-H &#x27;X-API-Key: SUA_CHAVE&#x27;") == 4  # one per chain
    assert with_keys.count("headers={&quot;X-API-Key&quot;: &quot;SUA_CHAVE&quot;}") == 4
    assert "X-API-Key: SUA_CHAVE" not in without and "SUA_CHAVE" not in without
    with_ui = landing_page(app.state.served, base_url="http://127.0.0.1:8000", ui=True)
    assert 'href="/ui/?cadeia=qa"' in with_ui  # each chain's button opens its own tab


async def test_favicon_and_docs_without_feedback_routes(app):
    async with client_for(app) as http:
        icon = await http.get("/favicon.ico")
        paths = (await http.get("/openapi.json")).json()["paths"]
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert not [p for p in paths if "feedback" in p or "trace_link" in p]
    assert "/story/stream" in paths


def test_feedback_routes_appear_with_langsmith_tracing():
    """In a process of its own: LangSmith reads (and caches) its settings once."""
    script = ("from maritaca_chains import create_app, ServerSettings; "
              "from maritaca import ChatMaritaca; "
              "app = create_app(ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False), "
              "model=ChatMaritaca(base_url='http://127.0.0.1:9', api_key='k')); "
              "print(sorted(p for p in app.openapi()['paths'] if 'feedback' in p))")
    env = {**os.environ, "LANGSMITH_TRACING": "true", "LANGSMITH_API_KEY": "lsv2-test"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sorted(f"/{n}/feedback" for n in (
        "qa", "story", "summarize", "chat")))


async def test_playground_and_docs_have_portuguese_titles(app):
    """LangServe's playground page is English and titled "Playground" whatever it serves
    (langserve_compat.playground_page); this fails if LangServe changes that page."""
    async with client_for(app) as http:
        playground = await http.get("/qa/playground/")
        docs = await http.get("/docs")
        schema = (await http.get("/openapi.json")).json()
    assert playground.status_code == 200
    assert '<html lang="pt-BR">' in playground.text
    assert "<title>Playground · Perguntas e respostas · maritaca-chains</title>" in playground.text
    assert int(playground.headers["content-length"]) == len(playground.content)
    assert "<title>maritaca-chains · documentação da API</title>" in docs.text
    assert schema["info"]["description"].startswith("Cadeias LCEL em streaming")


async def test_run_refusals_have_a_type_and_speak_the_callers_language(app):
    async with client_for(app) as http:
        pt = await http.get("/story/runs/no-such-run")
        en = await http.get("/story/runs/no-such-run", headers=ENGLISH)
    assert pt.status_code == en.status_code == 404
    assert pt.json()["type"] == en.json()["type"] == "run_not_found"
    assert pt.json()["detail"].startswith("Execução (run) não encontrada")
    assert en.json()["detail"].startswith("No such run")
