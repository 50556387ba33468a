"""The Maritaca key never leaves the server: not in any response, log, error or dump.

A distinctive key is configured the way a deployment does it (server settings, so the
server builds its own ChatMaritaca), the emulator accepts only that key, and every
endpoint is called, succeeding and failing (upstream 401, 429, 5xx, broken streams,
bad input, refused config). Everything a client or an operator could see (bodies,
headers, SSE events, WebSocket frames, log records at DEBUG from every logger,
httpx/httpcore included, stdout/stderr, exception texts and tracebacks, ``repr``/``str``
/``dumps`` of the model and chains, the config schemas) is searched for the key, for
pieces of it and for its base64, hex and URL-encoded forms. A client that tries to set
``api_key`` or ``base_url`` through ``config.configurable`` is refused with 422, in the
body or in LangServe's ``/c/{config_hash}/`` path form.
"""

from __future__ import annotations

import base64
import json
import logging
import traceback
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.load import dumps
from langserve.lzstring import LZString
from pydantic import SecretStr

from chains import CHAINS
from maritaca import ChatMaritaca, errors
from maritaca.testing import MaritacaEmulator, Scenario, closed_port_url
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import loopback_client

SECRET = "sk-maritaca-SECRET-Zq7Hq2xZ9wPv4Lr"
DISTINCTIVE = "Zq7Hq2xZ9wPv4Lr"  # the part that appears nowhere else by chance
INPUTS = {"story": {"topic": "Brasil"}, "qa": {"question": "Qual é a capital do Brasil?"},
          "summarize": {"text": "O sabiá canta. O sabiá voa."}}
# retry_after over the model's 60 s cap: raised at once, not retried
FAULTS = [Scenario.unauthorized(), Scenario.rate_limit(retry_after=61), Scenario.server_error(),
          Scenario.drop(after_chunks=2), Scenario.error_event(after_chunks=2),
          Scenario.bad_request(), Scenario.context_too_long()]


def secret_forms(secret: str = SECRET) -> set[str]:
    """The key, 6-character pieces of its distinctive part, and encodings of it."""
    forms = {secret, secret.lower(), secret.upper(), secret.encode().hex(),
             urllib.parse.quote(secret), json.dumps(secret)[1:-1]}
    forms |= {DISTINCTIVE[i:i + 6] for i in range(len(DISTINCTIVE) - 5)}
    for raw in (secret, f"Bearer {secret}", f":{secret}", f"{secret}:"):
        data = raw.encode()
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            for offset in range(3):  # whatever the key's alignment inside a longer text
                encoded = encode(data[offset:]).decode().rstrip("=")
                forms.add(encoded[4:-4])
    return {f for f in forms if len(f) >= 6}


FORMS = secret_forms()


class Seen:
    """Everything observable, with where it came from."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.minimum = 1  # a test that should see much says how much

    def add(self, where: str, value: object) -> None:
        self.items.append((where, value if isinstance(value, str) else repr(value)))

    def response(self, where: str, response: Any) -> None:
        self.add(f"{where} body", response.text)
        self.add(f"{where} headers", str(dict(response.headers)))

    def leaks(self) -> list[str]:
        found = []
        for where, text in self.items:
            for form in FORMS:
                if form in text:
                    at = text.index(form)
                    found.append(f"{where}: {form!r} in ...{text[max(0, at - 80):at + 80]!r}...")
        return found


@pytest.fixture
def secret_emulator() -> Iterator[MaritacaEmulator]:
    with MaritacaEmulator(api_key=SECRET, reply_tokens=8) as emulator:
        yield emulator


@pytest.fixture
def deployed(secret_emulator: MaritacaEmulator) -> Any:
    """The app as deployed: the settings hold the key, the server builds its model."""
    settings = ServerSettings(_env_file=None, MARITACA_API_KEY=SECRET,  # type: ignore[call-arg]
                              MARITACA_BASE_URL=secret_emulator.base_url,
                              MARITACA_BACKEND="maritaca")
    return create_app(settings)


@pytest.fixture
def seen(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Iterator[Seen]:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "langserve", "maritaca_chains", "uvicorn", "fastapi"):
        caplog.set_level(logging.DEBUG, logger=name)
    box = Seen()
    yield box
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    records = caplog.get_records("setup") + caplog.get_records("call")  # not teardown's
    assert records, "no log records captured"
    for record in records:
        box.add(f"log {record.name}", formatter.format(record))  # message, args, traceback
        box.add(f"log {record.name} args", record.args)
    out = capsys.readouterr()
    box.add("stdout", out.out)
    box.add("stderr", out.err)
    leaks = box.leaks()
    assert not leaks, "the key leaked:\n" + "\n".join(leaks[:20])
    assert len(box.items) >= box.minimum, "the test saw too little to mean anything"


def _config_hash(config: dict[str, Any]) -> str:
    return str(LZString.compressToEncodedURIComponent(json.dumps(config)))


# ------------------------------------------------------------------------ the tests

def test_every_endpoint_success_and_failure_never_shows_the_key(
        deployed: Any, secret_emulator: MaritacaEmulator, seen: Seen) -> None:
    seen.minimum = 300
    with loopback_client(deployed, raise_server_exceptions=False) as http:
        for path in ("/", "/healthz", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            seen.response(path, http.get(path))
        assert http.get("/healthz").json()["backend"] == "maritaca"
        for name, value in INPUTS.items():
            for kind in ("input_schema", "output_schema", "config_schema"):
                seen.response(f"/{name}/{kind}", http.get(f"/{name}/{kind}"))
            for page in ("playground/", "playground/index.html", "playground/../../etc"):
                seen.response(f"/{name}/{page}", http.get(f"/{name}/{page}"))
            calls: dict[str, dict[str, Any]] = {"invoke": {"input": value}, "batch": {"inputs": [value, value]},
                     "stream": {"input": value}, "stream_events": {"input": value},
                     "stream_log": {"input": value}}
            for route, body in calls.items():  # success
                response = http.post(f"/{name}/{route}", json=body)
                assert response.status_code == 200, (route, response.text[:300])
                seen.response(f"/{name}/{route}", response)
            for fault in FAULTS if name == "story" else FAULTS[:1]:  # upstream failures
                for route in ("invoke", "stream", "stream_events", "batch"):
                    # enough copies for the model's retries, and batch's two inputs
                    secret_emulator.enqueue(*[fault] * 6)
                    response = http.post(f"/{name}/{route}", json=calls[route])
                    seen.response(f"/{name}/{route} after {fault.name}", response)
                    secret_emulator.reset()
            for route, body in calls.items():  # bad input
                bad = {**body, "input": {"nope": 1}} if "input" in body else {"inputs": [1]}
                seen.response(f"/{name}/{route} bad input", http.post(f"/{name}/{route}",
                                                                       json=bad))
            if any(r.path == f"/{name}/text" for r in deployed.routes):  # the extra faces
                seen.response(f"/{name}/text", http.post(f"/{name}/text", json=value))
                secret_emulator.enqueue(Scenario.unauthorized())
                seen.response(f"/{name}/text 401", http.post(f"/{name}/text", json=value))
                with http.websocket_connect(f"/{name}/ws") as ws:
                    for ws_fault in (None, Scenario.unauthorized(),
                                     Scenario.drop(after_chunks=2)):
                        if ws_fault is not None:
                            secret_emulator.enqueue(ws_fault)
                        ws.send_text(json.dumps(value))
                        while (frame := ws.receive_text()) != "[END]":
                            seen.add(f"/{name}/ws frame", frame)
    assert any("upstream_authentication" in text for _, text in seen.items)
    assert any("rate_limit" in text for _, text in seen.items)


EVIL_KEYS = ["api_key", "base_url", "openai_api_key", "default_headers"]
ROUTES = ["invoke", "batch", "stream", "stream_events", "stream_log"]


def _evil_body(route: str, key: str, *, with_config: bool = True) -> dict[str, Any]:
    evil = {"configurable": {key: "http://127.0.0.1:9/steal"}}
    body: dict[str, Any] = ({"inputs": [INPUTS["story"]]} if route == "batch"
                            else {"input": INPUTS["story"]})
    return {**body, "config": evil} if with_config else body


@pytest.mark.parametrize("key", EVIL_KEYS)
@pytest.mark.parametrize("route", ROUTES)
def test_overriding_key_or_url_through_configurable_is_refused(
        deployed: Any, secret_emulator: MaritacaEmulator, seen: Seen, route: str,
        key: str) -> None:
    with loopback_client(deployed, raise_server_exceptions=False) as http:
        response = http.post(f"/story/{route}", json=_evil_body(route, key))
        seen.response(route, response)
        assert response.status_code == 422, response.text[:300]
        assert key in response.text
    assert not secret_emulator.requests, "a refused request reached the upstream"


@pytest.mark.parametrize("key", EVIL_KEYS)
@pytest.mark.parametrize("route", ROUTES)
def test_configurable_in_the_path_form_never_redirects_the_key(
        deployed: Any, secret_emulator: MaritacaEmulator, seen: Seen, route: str,
        key: str) -> None:
    """LangServe's ``/c/{config_hash}/`` form: whatever the server answers, the chain's
    model has no such configurable field, so the request (and the key) can only go to
    the configured upstream."""
    evil = {"configurable": {key: "http://127.0.0.1:9/steal"}}
    with loopback_client(deployed, raise_server_exceptions=False) as http:
        response = http.post(f"/story/c/{_config_hash(evil)}/{route}",
                             json=_evil_body(route, key, with_config=False))
        seen.response(f"c/{{hash}}/{route}", response)
    assert response.status_code < 500
    assert all(r.path == "/chat/completions" for r in secret_emulator.requests)


@pytest.mark.parametrize("route", ["invoke", "stream"])
def test_configurable_in_the_path_form_is_refused(deployed: Any, route: str) -> None:
    evil = {"configurable": {"base_url": "http://127.0.0.1:9/steal"}}
    with loopback_client(deployed, raise_server_exceptions=False) as http:
        response = http.post(f"/story/c/{_config_hash(evil)}/{route}",
                             json=_evil_body(route, "base_url", with_config=False))
    assert response.status_code == 422, response.text[:300]


def test_model_chains_and_errors_never_show_the_key(
        secret_emulator: MaritacaEmulator, seen: Seen) -> None:
    seen.minimum = 30
    settings = ServerSettings(_env_file=None, MARITACA_API_KEY=SECRET,  # type: ignore[call-arg]
                              MARITACA_BASE_URL=secret_emulator.base_url)
    assert settings.api_key is not None
    seen.add("settings repr", repr(settings))
    seen.add("settings str", str(settings))
    seen.add("settings dump", settings.model_dump_json())
    model = ChatMaritaca(api_key=settings.api_key, base_url=secret_emulator.base_url,
                         max_retries=0)
    for label, value in [("repr", repr(model)), ("str", str(model)),
                         ("dumps", dumps(model)), ("dumps pretty", dumps(model, pretty=True)),
                         ("to_json", model.to_json()),
                         ("model_dump", model.model_dump()),
                         ("model_dump_json", model.model_dump_json()),
                         ("identifying params", model._identifying_params),
                         ("ls params", model._get_ls_params()),
                         ("api_key repr", repr(model.api_key)), ("api_key str", str(model.api_key))]:
        seen.add(f"model {label}", value)
    assert "MARITACA_API_KEY" in dumps(model)  # serialised as a reference to the variable
    app = create_app(settings)
    for name, chain in app.state.chains.items():
        seen.add(f"{name} repr", repr(chain))
        seen.add(f"{name} dumps", dumps(chain))
        seen.add(f"{name} config schema", json.dumps(chain.config_schema().model_json_schema()))
        seen.add(f"{name} config specs", repr(chain.config_specs))
        seen.add(f"{name} graph", json.dumps(chain.get_graph().to_json(), default=str))
        assert CHAINS[name].input_type is not None
    # library errors: the key rejected, the API down, a broken stream
    failing = [(Scenario.unauthorized(), model), (Scenario.rate_limit(), model),
               (Scenario.error_event(after_chunks=1), model),
               (None, ChatMaritaca(api_key=SecretStr(SECRET), base_url=closed_port_url(),
                             max_retries=0))]
    for scenario, which in failing:
        if scenario is not None:
            secret_emulator.enqueue(scenario)
        with pytest.raises(errors.MaritacaError) as info:
            "".join(str(c.content) for c in which.stream("Olá"))
        seen.add("error str", str(info.value))
        seen.add("error repr", repr(info.value))
        seen.add("error traceback", "".join(traceback.format_exception(info.value)))
    # what went over the wire did carry it, so the search would have found a leak
    direct = httpx.post(f"{secret_emulator.base_url}/chat/completions",
                        headers={"Authorization": f"Bearer {SECRET}"},
                        json={"model": "sabia-4", "messages": [{"role": "user", "content": "x"}]})
    assert direct.status_code == 200
    assert all(r.headers.get("authorization") == "<redacted>" for r in secret_emulator.requests)


def test_the_search_finds_encoded_and_partial_keys() -> None:
    box = Seen()
    box.add("plain", f"x{SECRET}y")
    box.add("piece", f"...{DISTINCTIVE[3:11]}...")
    box.add("basic auth", base64.b64encode(f"user:{SECRET}".encode()).decode())
    box.add("bearer b64", "zz" + base64.urlsafe_b64encode(f"Bearer {SECRET}".encode()).decode())
    box.add("hex", SECRET.encode().hex())
    box.add("clean", "sk-maritaca-SECRET is a prefix anyone may print")
    found = {line.split(":")[0] for line in box.leaks()}
    assert found == {"plain", "piece", "basic auth", "bearer b64", "hex"}
