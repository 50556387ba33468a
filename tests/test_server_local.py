"""`python server.py` with no key: the embedded model streams real tokens; no orphan after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from maritaca import local
from maritaca._local_process import free_port
from tests.test_local_backend import ROOT, _gone, local_model


def _start_server(port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MARITACA_", "OPENAI_"))}
    return subprocess.Popen([sys.executable, "server.py", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_healthy(url: str, proc: subprocess.Popen[str], within: float = 90) -> dict:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            return httpx.get(f"{url}/healthz", timeout=2, trust_env=False).json()
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("server did not become healthy")


@local_model
@pytest.mark.timeout(180)
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_server_streams_a_story_from_the_embedded_model_and_leaves_no_child(stop_signal):
    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    proc = _start_server(port)
    try:
        health = _wait_healthy(url, proc)
        assert health["backend"] == "local" and health["model"] == local.MODEL_NAME
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("llama_cpp.server" in " ".join(c.cmdline()) for c in children)

        body = {"input": {"topic": "um passarinho"},
                "config": {"configurable": {"max_tokens": 40, "temperature": 0}}}
        tokens = []
        with httpx.stream("POST", f"{url}/story/stream", json=body, timeout=60,
                          trust_env=False) as response:
            assert response.status_code == 200
            event = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "data":
                    tokens.append(json.loads(line[6:]))
                assert event != "error", line
        assert len(tokens) > 5 and len("".join(tokens).split()) > 3  # real words, streamed

        proc.send_signal(stop_signal)
        proc.wait(30)
        for child in children:
            assert _gone(child.pid), f"{child.cmdline()} outlived the server"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
