"""A new user's first hour: the installed command with neither a key nor the embedded
model, ``backend``, ``serve``'s flags and log, and the embedded model's default cap.

The server runs as the user runs it (``python -m maritaca_chains serve`` in a fresh
process, from an empty folder: no ``.env``); "not installed" is simulated the way the
code detects it, by making ``llama_cpp`` unimportable in that process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from maritaca import ChatMaritaca, local
from maritaca.testing import MaritacaEmulator
from tests import child_servers

# llama_cpp made unimportable, as in a venv without the [local] extra
WITHOUT_LOCAL = ("import sys; sys.modules['llama_cpp'] = None; "
                 "from maritaca_chains.cli import main; main(sys.argv[1:])")
INSTALL_WORDS = ('pip install "maritaca-chains[local]"', 'CMAKE_ARGS="-DGGML_NATIVE=OFF')


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MARITACA_", "LANGSMITH_", "LANGCHAIN_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@contextmanager
def server(tmp_path: Path, *args: str, without_local: bool = False,
           **env: str) -> Iterator[tuple[str, Path]]:
    """``maritaca-chains serve`` in a child process on a free port: its URL and log file."""
    command = ([sys.executable, "-c", WITHOUT_LOCAL] if without_local
               else [sys.executable, "-m", "maritaca_chains"])
    log = tmp_path / "server.log"
    # any answer from /healthz will do: without a model it is not 200
    with child_servers.serve(_env(MARITACA_CHAINS_UI="false", **env), *args, cwd=tmp_path,
                             log=log, command=command, timeout=60,
                             ready=lambda url: httpx.get(f"{url}/healthz", timeout=2,
                                                         trust_env=False)) as (url, _):
        yield url, log


def test_serve_without_key_or_embedded_model_starts_and_names_both_fixes(tmp_path):
    with server(tmp_path, without_local=True) as (url, log):
        health = httpx.get(f"{url}/healthz", trust_env=False).json()
        run = httpx.post(f"{url}/story/invoke", json={"input": {"topic": "Brasil"}},
                         trust_env=False)
        english = httpx.post(f"{url}/story/text", json={"topic": "Brasil"},
                             headers={"accept-language": "en-US,en;q=0.9"}, trust_env=False)
        landing = httpx.get(f"{url}/", trust_env=False).text
    assert (health["backend"], health["status"]) == ("none", "down")
    assert run.status_code == 503 and run.json()["type"] == "not_configured"
    message = run.json()["detail"]
    assert "MARITACA_API_KEY" in message and all(w in message for w in INSTALL_WORDS)
    assert message.startswith("Este servidor não tem modelo")  # pt-BR by default
    assert english.status_code == 503 and english.json()["type"] == "not_configured"
    assert english.json()["detail"].startswith("This server has no model")
    assert "nenhum instalado" in landing and "maritaca-chains[local]" in landing
    text = log.read_text()
    assert "Traceback" not in text and "startup failed" not in text.lower()
    warning = next(line for line in text.splitlines() if "No model to serve" in line)
    assert "MARITACA_API_KEY" in warning and all(w in warning for w in INSTALL_WORDS)


def _backend(without_local: bool, **env: str) -> tuple[str, str]:
    command = ([sys.executable, "-c", WITHOUT_LOCAL] if without_local
               else [sys.executable, "-m", "maritaca_chains"])
    done = subprocess.run([*command, "backend"], capture_output=True, text=True, timeout=60,
                          env=_env(**env), cwd="/")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr.strip()


def test_backend_says_what_serves_and_what_is_installed():
    word, why = _backend(True)
    assert word == "none" and "not installed" in why and "MARITACA_API_KEY" in why
    word, why = _backend(True, MARITACA_API_KEY="k")
    assert word == "maritaca" and "embedded model is not installed" in why
    if local.is_installed():
        word, why = _backend(False)
        assert word == "local" and "installed" in why


def test_serve_takes_forwarded_allow_ips_and_keeps_httpx_out_of_the_log(tmp_path):
    """The flag reaches uvicorn: a loopback client is no longer a trusted proxy, so its
    X-Forwarded-Proto is ignored (the landing page's snippets stay http://). Model calls
    leave no httpx line in the log."""
    https = {"x-forwarded-proto": "https"}
    with MaritacaEmulator(reply_tokens=5) as emu:
        env = {"MARITACA_API_KEY": emu.api_key, "MARITACA_BASE_URL": emu.base_url}
        with server(tmp_path, **env) as (url, log):
            trusted = httpx.get(f"{url}/", headers=https, trust_env=False).text
            answer = httpx.post(f"{url}/story/text", json={"topic": "Brasil"},
                                trust_env=False)
            time.sleep(0.3)
            text = log.read_text()
            assert f"curl -N {url.replace('http', 'https')}/" in trusted  # default: loopback
        with server(tmp_path, "--forwarded-allow-ips", "10.0.0.1", **env) as (url, _):
            untrusted = httpx.get(f"{url}/", headers=https, trust_env=False).text
            assert f"curl -N {url}/" in untrusted
    assert answer.status_code == 200 and emu.requests
    assert "HTTP Request:" not in text and "httpx" not in text, text


def test_the_embedded_model_gets_a_default_token_cap():
    """llama.cpp's server writes until its context is full without max_tokens: a call to
    the embedded model that sets none sends local.DEFAULT_MAX_TOKENS; others send none."""
    with MaritacaEmulator(reply_tokens=3) as emu:
        for model, expected in [(local.MODEL_NAME, local.DEFAULT_MAX_TOKENS), ("sabia-4", None)]:
            ChatMaritaca(base_url=emu.base_url, api_key=emu.api_key, model=model).invoke("oi")
            assert emu.requests[-1].body is not None
            assert emu.requests[-1].body.get("max_tokens") == expected, model
        ChatMaritaca(base_url=emu.base_url, api_key=emu.api_key, model=local.MODEL_NAME,
                     max_tokens=7).invoke("oi")
        assert emu.requests[-1].body is not None and emu.requests[-1].body["max_tokens"] == 7
    assert local.DEFAULT_MAX_TOKENS == 512


@pytest.mark.local_model
@pytest.mark.skipif(not local.is_installed(), reason="the embedded backend is not installed")
def test_a_bare_chat_maritaca_on_the_embedded_model_stops_at_the_cap(monkeypatch):
    monkeypatch.delenv("MARITACA_API_KEY", raising=False)
    monkeypatch.delenv("MARITACA_BASE_URL", raising=False)
    local.start()
    try:
        reply = ChatMaritaca(temperature=0).invoke("Count from 1 to 2000, one number a line.")
    finally:
        local.stop()
    assert reply.usage_metadata is not None
    assert 0 < reply.usage_metadata["output_tokens"] <= local.DEFAULT_MAX_TOKENS
