"""Quotas shared through a real redis-server by two real server processes: one limit,
whichever replica a request reaches.

redis-server (Debian's) and both uvicorn servers listen on 127.0.0.1 at free ports, in a
tmp dir, and are stopped by the fixture; skips without /usr/bin/redis-server. The
helpers here (``start_redis``, ``start_replicas``) serve tests/test_nginx.py too.
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

import httpx
import pytest

from maritaca.local import free_port
from maritaca.testing import MaritacaEmulator, terminate

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
ROOT = Path(__file__).resolve().parent.parent
KEY_1, KEY_2 = "replica-key-0001", "replica-key-0002"
STORY = {"input": {"topic": "Brasil"}}

needs_redis = pytest.mark.skipif(not os.access(REDIS_SERVER, os.X_OK),
                                 reason="redis-server is not installed (make install-dev)")


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError, subprocess.SubprocessError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout} s")
        time.sleep(0.1)


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
        wait_until(lambda: redis_cli(port, "ping") == "PONG", "redis-server")
        yield port
    finally:
        terminate(redis, timeout=10)


@contextmanager
def start_replicas(emu: MaritacaEmulator, count: int = 2,
                   **settings: str) -> Iterator[list[str]]:
    """``count`` real server processes (uvicorn, the package's app factory) over the
    emulator, on 127.0.0.1 at free ports; yields their base URLs."""
    env = {**os.environ, "MARITACA_API_KEY": emu.api_key or "k",
           "MARITACA_BASE_URL": emu.base_url, "MARITACA_BACKEND": "maritaca",
           "MARITACA_CHAINS_UI": "false", "MARITACA_CHAINS_LOG_LEVEL": "warning", **settings}
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
            wait_until(lambda u=url, p=proc: p.poll() is None  # type: ignore[misc]
                       and httpx.get(f"{u}/healthz", timeout=2).status_code == 200,
                       f"the server at {url}", timeout=90)
        yield urls
    finally:
        for proc in procs:
            terminate(proc, timeout=10)


@needs_redis
def test_two_replicas_enforce_one_shared_limit(tmp_path):
    with MaritacaEmulator(reply_tokens=12) as emu, start_redis(tmp_path) as port, \
            start_replicas(emu, MARITACA_CHAINS_API_KEYS=f"{KEY_1},{KEY_2}",
                           MARITACA_CHAINS_REDIS_URL=f"redis://127.0.0.1:{port}/0",
                           MARITACA_CHAINS_RATE_LIMIT="3/minute",
                           MARITACA_CHAINS_TOKEN_BUDGET="*0002=20/hour") as (a, b):
        one = {"X-API-Key": KEY_1}
        with httpx.Client(timeout=30) as http:
            # three requests, spread over both replicas, use KEY_1's 3/minute
            for url in (a, b, a):
                assert http.post(f"{url}/story/invoke", json=STORY, headers=one
                                 ).status_code == 200
            upstream = len(emu.requests)
            for url in (b, a):
                refused = http.post(f"{url}/story/text", json=STORY, headers=one)
                assert refused.status_code == 429
                assert "Rate limit of 3 per 1 minute" in refused.json()["detail"]
                assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert len(emu.requests) == upstream
            # tokens spent through one replica count on the other
            two = {"X-API-Key": KEY_2}
            assert http.post(f"{a}/story/text", json=STORY, headers=two).status_code == 200
            refused = http.post(f"{b}/story/stream", json=STORY, headers=two)
            assert refused.status_code == 429
            assert "Token budget (input + output) of 20 per 1 hour" in refused.json()["detail"]
            assert len(emu.requests) == upstream + 1
        assert redis_cli(port, "--scan", "--pattern", "maritaca_chains:quota*")  # in Redis
