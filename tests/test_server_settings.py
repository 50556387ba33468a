"""Which backend serves, from the environment; and what /healthz then says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from maritaca_chains import create_app
from maritaca_chains.settings import Backend, ServerSettings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(monkeypatch):
    for name in ("MARITACA_API_KEY", "MARITACA_BASE_URL", "MARITACA_BACKEND", "MARITACA_MODEL",
                 "MARITACA_CHAINS_API_KEYS", "MARITACA_CHAINS_HOST"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def settings() -> ServerSettings:
    return ServerSettings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(("variables", "backend"), [
    ({}, Backend.LOCAL),
    ({"MARITACA_API_KEY": "k"}, Backend.MARITACA),
    ({"MARITACA_API_KEY": "  "}, Backend.LOCAL),  # a blank key is no key
    ({"MARITACA_API_KEY": "k", "MARITACA_BACKEND": "local"}, Backend.LOCAL),
    ({"MARITACA_BACKEND": "maritaca", "MARITACA_API_KEY": "k"}, Backend.MARITACA),
    ({"MARITACA_BACKEND": "auto"}, Backend.LOCAL),
])
def test_backend_choice(env, variables, backend):
    for name, value in variables.items():
        env.setenv(name, value)
    assert settings().backend_in_use is backend


def test_an_unknown_backend_is_refused_with_the_choices(env):
    env.setenv("MARITACA_BACKEND", "openai")
    with pytest.raises(ValidationError, match="MARITACA_BACKEND") as info:
        settings()
    assert "'auto', 'maritaca' or 'local'" in str(info.value)


def test_forcing_maritaca_without_a_key_says_what_to_set(env):
    env.setenv("MARITACA_BACKEND", "maritaca")
    with pytest.raises(ValueError, match="MARITACA_API_KEY"):
        create_app(settings())


async def test_health_names_backend_and_model_never_the_key(env):
    env.setenv("MARITACA_API_KEY", "sk-very-secret")
    env.setenv("MARITACA_MODEL", "sabiazinho-4")
    app = create_app(settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get("/healthz")
    assert response.json()["backend"] == "maritaca"
    assert response.json()["model"] == "sabiazinho-4"
    assert "sk-very-secret" not in response.text


async def test_local_backend_is_announced_as_tiny(env):
    app = create_app(settings())  # the child starts in the lifespan, not here
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        health = (await http.get("/healthz")).json()
        page = (await http.get("/")).text
    assert health["backend"] == "local" and "tiny" in health["note"]
    assert "minúsculo" in page  # the landing page says it in Portuguese


def test_access_keys_are_comma_separated(env):
    env.setenv("MARITACA_CHAINS_API_KEYS", " a, b ,,c ")
    assert [k.get_secret_value() for k in settings().access_keys] == ["a", "b", "c"]


def test_server_refuses_a_public_address_without_keys(env):
    proc = subprocess.run([sys.executable, "server.py", "--host", "0.0.0.0", "--port", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "MARITACA_CHAINS_API_KEYS" in proc.stderr
