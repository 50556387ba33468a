"""The embedded llama.cpp backend: real model tokens, clean start/stop, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from maritaca import ChatMaritaca, errors, local

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(not local.is_installed(),
                       reason="the embedded backend is not installed: run `make install`"),
]


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie still answers kill(0): check its state
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_streams_real_tokens_then_stops_cleanly():
    with local.LocalBackend() as backend:
        models = httpx.get(f"{backend.base_url}/models").json()
        assert local.MODEL_NAME in [m["id"] for m in models["data"]]
        model = ChatMaritaca(base_url=backend.base_url, model=backend.model_name, max_tokens=24)
        chunks = [c.content for c in model.stream("Say hello in one sentence.") if c.content]
        assert len(chunks) >= 3 and "".join(chunks).strip()
        pid, url = backend.pid, backend.base_url
    assert pid is not None and _gone(pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models", timeout=1)


async def test_async_context_manager_and_default_routing(monkeypatch):
    monkeypatch.delenv("MARITACA_API_KEY", raising=False)
    monkeypatch.delenv("MARITACA_BASE_URL", raising=False)
    async with local.LocalBackend() as backend:
        assert backend.running
    assert not backend.running
    with pytest.raises(errors.AuthenticationError, match="maritaca.local.start"):
        ChatMaritaca().invoke("oi")
    first = local.start()
    try:
        assert local.start() is first and local.current() is first
        reply = await ChatMaritaca(max_tokens=8).ainvoke("Hi")  # no key: goes to the backend
        assert reply.content
    finally:
        local.stop()
    assert local.current() is None and _gone(first.pid or 0)


def test_no_orphan_when_the_parent_is_killed():
    code = textwrap.dedent("""
        import sys, time
        from maritaca import local
        backend = local.LocalBackend().start()
        print(backend.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        child_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert _gone(child_pid), "the llama.cpp server outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()  # type: ignore[union-attr]


def test_startup_failure_says_why(tmp_path, monkeypatch):
    bogus = tmp_path / "not-a-model.gguf"
    bogus.write_bytes(b"this is not a gguf file")
    monkeypatch.setattr(local, "model_file", lambda: bogus)
    with pytest.raises(local.LocalBackendError, match="exited during start-up"):
        local.LocalBackend(startup_timeout=30).start()
