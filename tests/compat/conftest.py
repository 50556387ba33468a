"""Fixtures of the compat smoke set; the run's header names the versions under test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from maritaca.local import free_port
from maritaca.testing import MaritacaEmulator, terminate

# The direct dependencies whose versions decide whether the ranges hold.
WATCHED = ("langchain-core", "langserve", "fastapi", "starlette", "pydantic",
           "pydantic-settings", "httpx", "sse-starlette", "uvicorn", "langsmith")


def pytest_report_header() -> list[str]:
    versions = []
    for name in WATCHED:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (absent)")
    import maritaca

    return [f"maritaca from {Path(maritaca.__file__).parent}", ", ".join(versions)]


@pytest.fixture(scope="module")
def emu() -> Iterator[MaritacaEmulator]:
    with MaritacaEmulator(reply_tokens=8) as emulator:
        yield emulator


@contextmanager
def serving(emu: MaritacaEmulator, cwd: Path, *flags: str) -> Iterator[str]:
    """``maritaca-chains serve`` (uvicorn, 127.0.0.1, a free port) over the emulator, run
    as a user runs it: the console script, settings from the environment, outside the
    repo; stopped on leaving. Its data (the threads' default database) goes under
    ``cwd``, never the user's own ``~/.local/share``."""
    port = free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MARITACA", "PROMETHEUS_MULTIPROC"))}
    env.update(MARITACA_API_KEY=emu.api_key or "k", MARITACA_BASE_URL=emu.base_url,
               XDG_DATA_HOME=str(cwd / "data"))
    script = Path(sys.executable).parent / "maritaca-chains"
    proc = subprocess.Popen([str(script), "serve", "--port", str(port), *flags], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2, trust_env=False).is_success:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"maritaca-chains serve exited:\n{proc.stdout.read()}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "maritaca-chains serve did not start in 60 s"
            time.sleep(0.2)
        yield url
    finally:
        terminate(proc)


@pytest.fixture(scope="module")
def server_url(emu: MaritacaEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server as ``maritaca-chains serve`` starts it (one process)."""
    with serving(emu, tmp_path_factory.mktemp("serve")) as url:
        yield url

