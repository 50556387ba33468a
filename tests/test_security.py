"""A web page must not drive the server: the tests play the attacker's page.

Each attack (a ``text/plain`` or type-less POST, a foreign ``Origin`` or
``Sec-Fetch-Site``, a DNS-rebinding ``Host``, a cross-site WebSocket handshake, a key in
the URL) is refused before any route runs, and the emulator records no upstream call.
The browser login is a POST form that checks the key before any cookie is set; pages
carry a CSP and refuse framing; and a real uvicorn subprocess, driven through logins,
wrong keys, keys in URLs and upstream failures, never prints a key.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from maritaca.testing import MaritacaEmulator, Scenario
from maritaca_chains import create_app
from maritaca_chains.security import ACCESS_COOKIE
from maritaca_chains.settings import ServerSettings
from tests.child_servers import serve
from tests.conftest import RunningServer, emulator_model

ROOT = Path(__file__).resolve().parent.parent
BODY = {"input": {"topic": "Brasil"}}
LANGSERVE_ROUTES = ["invoke", "batch", "stream", "stream_log", "stream_events"]
JSON_ROUTES = [f"/story/{r}" for r in LANGSERVE_ROUTES] + ["/story/text",
                                                            "/ui/gradio_api/queue/join"]


def body_for(path: str) -> bytes:
    if path.endswith("/batch"):
        return b'{"inputs": [{"topic": "Brasil"}]}'
    return b'{"topic": "Brasil"}' if path.endswith("/text") else b'{"input": {"topic": "Brasil"}}'


def app_with(emu: MaritacaEmulator, **env: Any) -> Any:
    return create_app(ServerSettings(_env_file=None, **env), model=emulator_model(emu))  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[MaritacaEmulator, Any]]:
    """One emulator and app for the module (building the app with Gradio takes seconds)."""
    with MaritacaEmulator(reply_tokens=12) as emulator:
        yield emulator, app_with(emulator)


@pytest.fixture
def emu(shared: tuple[MaritacaEmulator, Any]) -> MaritacaEmulator:
    shared[0].reset()  # each test counts its own upstream calls
    return shared[0]


@pytest.fixture
def app(shared: tuple[MaritacaEmulator, Any], emu: MaritacaEmulator) -> Any:
    return shared[1]


def client_for(app: Any, base_url: str = "http://127.0.0.1:8000") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False,
                                    client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30)


# ------------------------------------------------------------------- JSON means JSON

@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
async def test_json_routes_refuse_other_bodies_with_415(emu, app, path, content_type):
    """What a page can send without a CORS preflight (text/plain, a form, a type-less
    Blob) never reaches a chain, even from the server's own origin."""
    headers = {"content-type": content_type} if content_type else {}
    async with client_for(app) as http:
        response = await http.post(path, content=body_for(path), headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]
    assert not emu.requests


async def test_json_bodies_still_work(emu, app):
    async with client_for(app) as http:
        for path in JSON_ROUTES[:-1]:
            response = await http.post(path, content=body_for(path), headers={
                "content-type": "application/json; charset=utf-8",
                "origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-origin"})
            assert response.status_code == 200, (path, response.text[:200])
    assert len(emu.requests) == len(JSON_ROUTES) - 1


# ------------------------------------------------------------------- cross-site requests

@pytest.mark.parametrize("headers", [
    {"origin": "http://evil.example"},
    {"origin": "null"},  # sandboxed frames, file: pages
    {"origin": "http://127.0.0.1:9999"},  # another local origin (same-site, not same-origin)
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site"},
], ids=["foreign", "null", "other-port", "fetch-cross-site", "fetch-same-site"])
@pytest.mark.parametrize("path", ["/story/invoke", "/story/stream", "/story/text", "/login",
                                  "/ui/gradio_api/queue/join"])
async def test_cross_site_state_changing_requests_are_refused(emu, app, path, headers):
    content_type = ("application/x-www-form-urlencoded" if path == "/login"
                    else "application/json")
    async with client_for(app) as http:
        response = await http.post(path, content=body_for(path),
                                   headers={**headers, "content-type": content_type})
    assert response.status_code == 403, response.text
    assert response.json()["type"] in ("cross_site_origin", "cross_site_fetch")
    assert "outro site" in response.json()["detail"]  # pt-BR by default
    assert ACCESS_COOKIE not in response.headers.get("set-cookie", "")
    assert not emu.requests


async def test_cors_origins_get_real_cors_and_others_none(emu):
    app = app_with(emu, MARITACA_CHAINS_CORS_ORIGINS="https://app.example, http://localhost:5173/")
    async with client_for(app) as http:
        preflight = await http.options("/story/invoke", headers={
            "origin": "https://app.example", "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-api-key"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        for origin in ("https://app.example", "http://localhost:5173"):
            response = await http.post("/story/invoke", json=BODY, headers={"origin": origin})
            assert response.status_code == 200, response.text
            assert response.headers["access-control-allow-origin"] == origin
        evil = await http.post("/story/invoke", json=BODY, headers={"origin": "https://evil.example"})
        assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers
        refused = await http.options("/story/invoke", headers={
            "origin": "https://evil.example", "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in refused.headers
    assert len(emu.requests) == 2


async def test_without_cors_origins_no_cors_headers(app):
    async with client_for(app) as http:
        response = await http.get("/healthz", headers={"origin": "https://app.example"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


# ------------------------------------------------------------------- DNS rebinding

@pytest.mark.parametrize("host", ["evil.example:8778", "evil.example", "127.0.0.1.evil.example",
                                  "localhost.evil.example:8000", "[::1].evil.example", ""])
@pytest.mark.parametrize(("method", "path"), [("POST", "/story/invoke"), ("GET", "/healthz"),
                                              ("GET", "/story/playground/"), ("GET", "/ui/")])
async def test_a_rebinding_host_is_refused_before_any_route(emu, app, host, method, path):
    async with client_for(app) as http:
        response = await http.request(method, path, json=BODY if method == "POST" else None,
                                      headers={"host": host, "origin": f"http://{host}"})
    assert response.status_code == 400, response.text
    assert "MARITACA_CHAINS_ALLOWED_HOSTS" in response.json()["detail"]
    assert response.json()["type"] == "host_not_allowed"
    assert not emu.requests


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "127.0.0.2:1", "[::1]:8000",
                                  "LOCALHOST"])
async def test_loopback_hosts_are_served(app, host):
    async with client_for(app) as http:
        response = await http.get("/healthz", headers={"host": host})
    assert response.status_code == 200, response.text


async def test_allowed_hosts_and_the_configured_host_open_more_names(emu):
    app = app_with(emu, MARITACA_CHAINS_ALLOWED_HOSTS="chains.example.com,*.corp.example",
                   MARITACA_CHAINS_HOST="10.1.2.3", MARITACA_CHAINS_API_KEYS="k")
    async with client_for(app) as http:
        for host, status in [("chains.example.com", 200), ("a.corp.example:8000", 200),
                             ("10.1.2.3:8000", 200), ("corp.example", 400),
                             ("chains.example.com.evil.example", 400)]:
            response = await http.get("/healthz", headers={"host": host})
            assert response.status_code == status, (host, response.text)
    anything = app_with(emu, MARITACA_CHAINS_ALLOWED_HOSTS="*")
    async with client_for(anything) as http:
        assert (await http.get("/healthz", headers={"host": "whatever.example"})).status_code == 200


# ------------------------------------------------------------------- WebSocket handshakes

def _raw_handshake(port: int, host: str) -> bytes:
    """A WebSocket handshake as a rebinding page's browser sends it: the attacker's name
    in both Host and Origin (a name resolving to 127.0.0.1). The status line it gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((f"GET /story/ws HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
        return sock.recv(4096)


async def test_cross_site_and_rebinding_websocket_handshakes_are_refused(emu):
    app = app_with(emu, MARITACA_CHAINS_UI=False, MARITACA_CHAINS_CORS_ORIGINS="https://app.example")
    with RunningServer(app) as server:
        url = server.url.replace("http", "ws") + "/story/ws"
        port = server.url.rsplit(":", 1)[1]
        for origin in ("http://evil.example", f"http://localhost:{port}", "null"):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, origin=origin):  # type: ignore[arg-type]
                    pass
            assert refused.value.response.status_code == 403, origin
        assert _raw_handshake(int(port), f"evil.example:{port}").startswith(b"HTTP/1.1 400")
        assert _raw_handshake(int(port), f"127.0.0.1:{port}").startswith(b"HTTP/1.1 101")
        assert not emu.requests
        for origin in (server.url, "https://app.example", None):  # same origin, allowed, no browser
            async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                await ws.send("Brasil")
                while await ws.recv() != "[END]":
                    pass
    assert len(emu.requests) == 3


# ------------------------------------------------------------------- login and keys

async def test_login_is_a_form_that_checks_the_key_before_any_cookie(emu):
    app = app_with(emu, MARITACA_CHAINS_API_KEYS="k1,k2")
    async with client_for(app) as http:
        form = await http.get("/login")
        assert form.status_code == 200 and "method='post'" in form.text
        assert "Chave de acesso" in form.text and "lang='pt-BR'" in form.text
        for name in ("key", "apiKey", "access-key", "bearer", "password"):
            in_url = await http.get(f"/login?{name}=k1")
            assert in_url.status_code == 400 and "set-cookie" not in in_url.headers
            assert "k1" not in in_url.text
        wrong = await http.post("/login", data={"key": "nope"})
        assert wrong.status_code == 401 and "Chave incorreta" in wrong.text
        assert "set-cookie" not in wrong.headers
        as_json = await http.post("/login", json={"key": "k1"})
        assert as_json.status_code == 415 and "set-cookie" not in as_json.headers
        assert (await http.get("/story/playground/")).status_code == 401
        right = await http.post("/login", data={"key": "k2"},
                                headers={"origin": "http://127.0.0.1:8000"})
        assert right.status_code == 303 and right.headers["location"] == "/"
        cookie = right.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
        assert "k2" not in cookie.split(";")[0].split("=", 1)[1]  # a digest, not the key
        assert (await http.get("/story/playground/")).status_code == 200  # the cookie opens it
        assert (await http.post("/story/invoke", json=BODY)).status_code == 200
    async with client_for(app, "https://127.0.0.1:8000") as https:
        secure = await https.post("/login", data={"key": "k1"})
        assert "Secure" in secure.headers["set-cookie"]


@pytest.mark.parametrize("query", ["key=k1", "api_key=k1", "x-api-key=k1", "token=k1",
                                   "access_key=k1&other=1"])
async def test_keys_in_any_url_are_refused(emu, query):
    app = app_with(emu, MARITACA_CHAINS_API_KEYS="k1")
    async with client_for(app) as http:
        response = await http.post(f"/story/invoke?{query}", json=BODY)
    assert response.status_code == 400 and "URL" in response.json()["detail"]
    assert response.json()["type"] == "key_in_url"
    assert not emu.requests


# ------------------------------------------------------------------- page headers

def _hashes(text: str, tag: str) -> set[str]:
    pattern = rf"<{tag}\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</{tag}>"
    return {"'sha256-" + base64.b64encode(hashlib.sha256(m.encode()).digest()).decode() + "'"
            for m in re.findall(pattern, text, re.S)}


@pytest.mark.parametrize("path", ["/", "/login", "/docs", "/story/playground/", "/ui/"])
async def test_pages_refuse_framing_and_allow_only_their_own_inline_scripts(app, path):
    async with client_for(app) as http:
        page = await http.get(path)
    assert page.status_code == 200, page.text[:200]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    policy = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    scripts = set(policy.get("script-src", policy["default-src"]).split())
    assert "'unsafe-inline'" not in scripts
    assert _hashes(page.text, "script") <= scripts
    assert "*" not in policy["default-src"] and "*" not in scripts


async def test_api_responses_carry_no_page_work(app):
    """The streams pass through untouched: no headers added, nothing held."""
    async with client_for(app) as http:
        stream = await http.post("/story/stream", json=BODY)
    assert stream.status_code == 200 and "content-security-policy" not in stream.headers


# ------------------------------------------------------------------- the whole server output

ACCESS = "acc-Kq3Vd8ZpW2mXy7Tn"
SECRET = "sk-maritaca-Hb6Rj2Lw9QsFt4Gc"


def key_forms(key: str) -> set[str]:
    middle = key.split("-")[-1]
    forms = {key, urllib.parse.quote(key), key.encode().hex(), middle.lower(), middle.upper()}
    forms |= {middle[i:i + 6] for i in range(len(middle) - 5)}
    forms |= {base64.b64encode(key.encode()).decode().rstrip("=")[2:-2]}
    return forms


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[tuple[str, MaritacaEmulator, Path]]:
    with MaritacaEmulator(api_key=SECRET, reply_tokens=6) as emu:
        env = {**os.environ, "MARITACA_API_KEY": SECRET, "MARITACA_BASE_URL": emu.base_url,
               "MARITACA_BACKEND": "maritaca", "MARITACA_CHAINS_API_KEYS": ACCESS,
               "MARITACA_CHAINS_LOG_LEVEL": "debug", "MARITACA_CHAINS_UI": "false",
               "PYTHONUNBUFFERED": "1"}
        log = tmp_path / "server.log"
        with serve(env, cwd=tmp_path, log=log) as (url, _):
            yield url, emu, log


@pytest.mark.timeout(180)
def test_no_key_ever_reaches_the_server_output(server_process):
    url, emu, log = server_process
    with httpx.Client(base_url=url, timeout=20) as http:
        assert http.get("/login").status_code == 200
        assert http.get(f"/login?key={ACCESS}").status_code == 400
        assert http.get(f"/story/input_schema?api_key={ACCESS}").status_code == 400
        assert http.post("/login", data={"key": ACCESS + "x"}).status_code == 401
        assert http.post("/login", data={"key": ACCESS}).status_code == 303
        assert http.get("/story/playground/").status_code == 200  # with the cookie
        assert http.post("/story/invoke", json=BODY).status_code == 200
        http.cookies.clear()
        assert http.post("/story/invoke", json=BODY, headers={"x-api-key": "wrong"}).status_code == 401
        key = {"authorization": f"Bearer {ACCESS}"}
        assert http.post("/story/invoke", json=BODY, headers=key).status_code == 200
        for fault in (Scenario.unauthorized(), Scenario.server_error(), Scenario.drop(after_chunks=2)):
            emu.enqueue(*[fault] * 4)
            http.post("/story/invoke", json=BODY, headers=key)
            http.post("/story/stream", json=BODY, headers=key)
            emu.reset()
        assert http.post("/story/invoke", content=b"{", headers={**key, "content-type": "application/json"}).status_code == 422
        assert http.post("/story/invoke", json=BODY, headers={**key, "origin": "http://evil.example"}).status_code == 403
    time.sleep(0.5)  # the last access-log lines
    output = log.read_text(errors="replace")
    assert '"GET /login?key=REDACTED HTTP/1.1" 400' in output  # the access log was on
    assert "upstream_authentication" in output or "401" in output
    leaks = sorted({form for key in (ACCESS, SECRET) for form in key_forms(key) if form in output})
    assert not leaks, f"a key leaked into the server output: {leaks}\n{output[-3000:]}"


# ---------------------------------------------------------- loopback is an address

@pytest.mark.parametrize("client", ["testclient", "localhost", "203.0.113.9", "::ffff:8.8.8.8"])
async def test_without_keys_only_a_loopback_address_is_served(emu, app, client):
    """Loopback means the connection's address: a client named ``testclient`` or
    ``localhost`` (what a proxy could forward) is not served without a key."""
    transport = httpx.ASGITransport(app=app, client=(client, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        response = await http.post("/story/invoke", json=BODY)
        assert response.status_code == 403, response.text
        assert "loopback" in response.json()["detail"]
    for loopback in ("127.0.0.1", "127.8.9.10", "::1"):
        transport = httpx.ASGITransport(app=app, client=(loopback, 40000))
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://127.0.0.1:8000") as http:
            assert (await http.post("/story/invoke", json=BODY)).status_code == 200
    assert len(emu.requests) == 3


@pytest.mark.parametrize("forwarded", ["203.0.113.9, testclient", "203.0.113.9, localhost",
                                       "203.0.113.9"])
async def test_a_trusted_proxy_forwarding_a_name_is_not_loopback(emu, forwarded):
    """The attack: a trusted proxy (uvicorn ``--proxy-headers``) forwards a client whose
    last hop is the name ``testclient`` or ``localhost``. Not loopback: refused."""
    app = app_with(emu, MARITACA_CHAINS_UI=False)
    with RunningServer(app, proxy_headers=True, forwarded_allow_ips="127.0.0.1") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.post("/story/invoke", json=BODY,
                                       headers={"X-Forwarded-For": forwarded})
            assert response.status_code == 403, response.text
            served = await http.post("/story/invoke", json=BODY,
                                     headers={"X-Forwarded-For": "127.0.0.1"})
            assert served.status_code == 200
    assert len(emu.requests) == 1


# --------------------------------------------- media types compare case-insensitively

MALFORMED = [b'{"input": {"topic": "Brasil"}', b'\xff\xfe{"input": 1}', b'{"input": NaN}',
             b'{"input": {"topic": "\\ud800"}}', b'{"input": {"topic": "x"}, "config": null}',
             b'{"inputs": 5}']


@pytest.mark.parametrize("content_type", ["Application/JSON", "APPLICATION/JSON; Charset=UTF-8",
                                          "application/Problem+JSON"])
@pytest.mark.parametrize("body", MALFORMED)
async def test_any_case_of_json_gets_the_same_guard(emu, app, content_type, body):
    """The attack: the JSON guard compared ``content-type`` case-sensitively, so
    ``Application/JSON`` skipped it (500s, tracebacks, no body limit)."""
    async with client_for(app) as http:
        for path in ("/story/invoke", "/story/batch", "/story/stream", "/story/text",
                     "/story/runs"):
            response = await http.post(path, content=body,
                                       headers={"content-type": content_type})
            assert response.status_code < 500, (path, response.text[:300])
            if body != b'{"input": {"topic": "x"}, "config": null}':
                assert response.status_code in (413, 415, 422), (path, response.text[:300])
    if b"null" not in body:
        assert not emu.requests


async def test_the_body_limit_holds_for_any_case_of_json(emu, app):
    big = b'{"input": {"topic": "' + b"x" * (9 * 2**20) + b'"}}'
    async with client_for(app) as http:
        for content_type in ("application/json", "Application/JSON"):
            response = await http.post("/story/invoke", content=big,
                                       headers={"content-type": content_type})
            assert response.status_code == 413, response.text[:200]
            assert "MiB" in response.json()["detail"]
    assert not emu.requests
