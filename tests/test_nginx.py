"""deploy/nginx/maritaca-chains.conf in front of two real server processes (on the
emulator): every stream comes through as it is made, and a client hanging up at nginx
closes the upstream Maritaca request.

nginx (Debian's /usr/sbin/nginx) runs the deploy config as written, only its replica
lines and ``listen`` rewritten to free loopback ports, with its own prefix, pid, logs and
temp dirs in a tmp dir and ``daemon off``; the test stops it. Skips without nginx.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from websockets.asyncio.client import connect

from maritaca.local import free_port
from maritaca.testing import MaritacaEmulator, Scenario, terminate
from tests.child_servers import ROOT, start_replicas, wait_until
from tests.conftest import wait_disconnected

NGINX = "/usr/sbin/nginx"
DEPLOY_CONF = ROOT / "deploy" / "nginx" / "maritaca-chains.conf"
TOKENS, DELAY = 20, 0.05  # each answer takes about a second to be made
STORY = {"input": {"topic": "Brasil"}}

pytestmark = pytest.mark.skipif(not os.access(NGINX, os.X_OK),
                                reason="nginx is not installed (make install-dev)")


class Proxy(NamedTuple):
    emu: MaritacaEmulator
    url: str
    replicas: list[str]
    access_log: Path


def nginx_config(workdir: Path, port: int, replicas: list[str]) -> Path:
    """The deploy config with these replicas and this port, inside a main config whose
    pid, logs and temp files stay in ``workdir``."""
    site = DEPLOY_CONF.read_text()
    servers = "".join(f"    server {url.removeprefix('http://')} max_fails=3 fail_timeout=10s;\n"
                      for url in replicas)
    site, found = re.subn(r"(?m)^    server 127\.0\.0\.1:\d+ .*;\n", "", site)
    assert found >= 2, "the deploy config lists its replicas as `server 127.0.0.1:PORT ...;`"
    site = site.replace("upstream maritaca_chains {\n",
                        "upstream maritaca_chains {\n" + servers, 1)
    site, found = re.subn(r"(?m)^    listen 80;$", f"    listen 127.0.0.1:{port};", site)
    assert found == 1
    (workdir / "site.conf").write_text(site)
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = "".join(f"    {kind}_temp_path {workdir / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = (f"{user}worker_processes 1;\npid {workdir / 'nginx.pid'};\n"
            f"error_log {workdir / 'error.log'} warn;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            "    log_format upstream '$request_uri $status $upstream_addr';\n"
            f"    access_log {workdir / 'access.log'} upstream;\n"
            f"{temp}    include {workdir / 'site.conf'};\n}}\n")
    (workdir / "nginx.conf").write_text(main)
    return workdir / "nginx.conf"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    workdir = tmp_path_factory.mktemp("nginx")
    with MaritacaEmulator(reply_tokens=TOKENS, token_delay=DELAY) as emu, \
            start_replicas(emu) as replicas:
        port = free_port()
        config = nginx_config(workdir, port, replicas)
        check = subprocess.run([NGINX, "-t", "-p", str(workdir), "-e", "stderr",
                                "-c", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        nginx = subprocess.Popen([NGINX, "-p", str(workdir), "-e", str(workdir / "error.log"),
                                  "-c", str(config), "-g", "daemon off;"],
                                 stdin=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200,
                       "nginx")
            for replica in replicas:  # a replica's first stream pays its lazy start-up
                httpx.post(f"{replica}/story/invoke", json=STORY, timeout=60)
            yield Proxy(emu, url, replicas, workdir / "access.log")
        finally:
            terminate(nginx, timeout=10)


@pytest.fixture
def emu(proxy: Proxy) -> MaritacaEmulator:
    proxy.emu.reset()
    return proxy.emu


def assert_streamed(arrivals: list[float], started: float) -> None:
    """Chunks came as the emulator made them (one token every DELAY s), not all at the end."""
    assert len(arrivals) >= 5, f"only {len(arrivals)} reads: the answer came in one piece"
    made_in = TOKENS * DELAY
    assert arrivals[-1] - arrivals[0] > 0.5 * made_in, arrivals  # spread over the answer
    assert arrivals[0] - started < 0.5 * made_in  # the first chunk did not wait for the end


async def timed_reads(chunks: AsyncIterator[bytes]) -> list[float]:
    return [time.monotonic() async for chunk in chunks if chunk]


@pytest.mark.parametrize(("path", "marker"), [
    ("/story/stream", b"event: data"),
    ("/story/stream_events", b"on_chat_model_stream"),
    ("/story/text", b""),
])
async def test_streams_come_through_nginx_as_they_are_made(proxy, emu, path, marker):
    async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as http:
        started = time.monotonic()
        async with http.stream("POST", path, json=STORY) as response:
            assert response.status_code == 200
            body, arrivals = b"", []
            async for chunk in response.aiter_raw():
                body += chunk
                arrivals.append(time.monotonic())
    assert marker in body
    assert_streamed(arrivals, started)


async def test_websocket_comes_through_nginx_as_it_is_made(proxy, emu):
    ws_url = proxy.url.replace("http", "ws") + "/story/ws"
    async with connect(ws_url) as ws:
        started = time.monotonic()
        await ws.send("Brasil")
        arrivals = []
        while (frame := await ws.recv()) != "[END]":
            assert not str(frame).startswith("[ERROR]"), frame
            arrivals.append(time.monotonic())
    assert_streamed(arrivals, started)


@pytest.mark.parametrize("path", ["/story/stream", "/story/text"])
async def test_hanging_up_at_nginx_closes_the_upstream_request(proxy, emu, path):
    emu.enqueue(Scenario.ok(reply_tokens=2000))  # about 100 s if nobody stops it
    async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as http:
        async with http.stream("POST", path, json=STORY) as response:
            reads = 0
            async for _chunk in response.aiter_raw():
                reads += 1
                if reads >= 5:
                    break
        hung_up = time.monotonic()
    await asyncio.to_thread(wait_disconnected, emu.requests[-1], hung_up)
    assert emu.requests[-1].chunks_sent < 200


async def test_websocket_hang_up_at_nginx_closes_the_upstream_request(proxy, emu):
    emu.enqueue(Scenario.ok(reply_tokens=2000))
    async with connect(proxy.url.replace("http", "ws") + "/story/ws") as ws:
        await ws.send("Brasil")
        for _ in range(5):
            await ws.recv()
    hung_up = time.monotonic()
    await asyncio.to_thread(wait_disconnected, emu.requests[-1], hung_up)


def test_nginx_spreads_requests_over_both_replicas(proxy, emu):
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        for _ in range(4):
            response = http.post("/story/invoke", json=STORY)
            assert response.status_code == 200
            assert json.loads(response.text)["output"]
    upstreams = {line.split()[-1] for line in proxy.access_log.read_text().splitlines()
                 if line.startswith("/story/invoke ")}
    assert upstreams == {url.removeprefix("http://") for url in proxy.replicas}
