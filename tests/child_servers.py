"""Servers the tests start as child processes: ours, redis-server, replicas.

Use these instead of a hand-written start-and-poll loop: each one listens on 127.0.0.1 at
a free port, waits until it answers (failing with the child's log when it exits or never
does), and is stopped by PID when the ``with`` block ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from maritaca.local import free_port
from maritaca.testing import MaritacaEmulator, terminate

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

needs_redis = pytest.mark.skipif(not os.access(REDIS_SERVER, os.X_OK),
                                 reason="redis-server is not installed (make install-dev)")


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30, *,
               process: subprocess.Popen[Any] | None = None, log: Path | None = None) -> Any:
    """Poll ``check`` until it returns something true (connection errors count as "not
    yet") and return that; fail naming ``what`` if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if result := check():
                return result
        except (httpx.HTTPError, OSError, subprocess.SubprocessError):
            pass
        exited = process is not None and process.poll() is not None
        if exited or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            state = "exited" if exited else f"did not start within {timeout} s"
            raise RuntimeError(f"{what} {state}\n{tail}".rstrip())
        time.sleep(0.1)


def healthy(url: str) -> dict[str, Any] | None:
    """``/healthz``'s body once the server at ``url`` answers 200, else None."""
    response = httpx.get(f"{url}/healthz", timeout=2, trust_env=False)
    return response.json() if response.status_code == 200 else None


@contextmanager
def serve(env: dict[str, str], *args: str, cwd: Path = ROOT, log: Path | None = None,
          command: list[str] | None = None, timeout: float = 90,
          ready: Callable[[str], Any] = healthy,
          ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``maritaca-chains serve`` (or ``command`` + ``serve``) on a free port, started with
    ``env``; yields its URL and process once ``ready(url)`` (by default: ``/healthz``
    answers 200). Output goes to ``log``."""
    port = free_port()
    command = command or [sys.executable, "-m", "maritaca_chains"]
    sink = log.open("wb") if log else None
    try:
        proc = subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", str(port),
                                 *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=sink or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    finally:
        if sink:
            sink.close()  # the child keeps its own copy of the descriptor
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: ready(url), "the server", timeout, process=proc, log=log)
        yield url, proc
    finally:
        terminate(proc, timeout=20)


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=5).stdout.strip()


@contextmanager
def start_redis(workdir: Path) -> Iterator[int]:
    """A redis-server on 127.0.0.1 at a free port, data in ``workdir``; yields the port."""
    port = free_port()
    redis = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                              "--dir", str(workdir), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: redis_cli(port, "ping") == "PONG", "redis-server", process=redis)
        yield port
    finally:
        terminate(redis, timeout=10)


def replica_env(emu: MaritacaEmulator, **settings: str) -> dict[str, str]:
    """A server's environment over the emulator, no UI, quiet logs, plus ``settings``."""
    return {**os.environ, "MARITACA_API_KEY": emu.api_key or "k",
            "MARITACA_BASE_URL": emu.base_url, "MARITACA_BACKEND": "maritaca",
            "MARITACA_CHAINS_UI": "false", "MARITACA_CHAINS_LOG_LEVEL": "warning", **settings}


@contextmanager
def start_replicas(emu: MaritacaEmulator, count: int = 2,
                   **settings: str) -> Iterator[list[str]]:
    """``count`` real server processes (uvicorn, the package's app factory) over the
    emulator, on 127.0.0.1 at free ports; yields their base URLs."""
    env = replica_env(emu, **settings)
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(count):
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "maritaca_chains:app_factory", "--factory",
                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                 "--timeout-graceful-shutdown", "2"],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}")
        for proc, url in zip(procs, urls, strict=True):
            wait_until(lambda u=url: healthy(u), f"the server at {url}", 90,  # type: ignore[misc]
                       process=proc)
        yield urls
    finally:
        for proc in procs:
            terminate(proc, timeout=10)
