"""Every README command a pip user can run, run as written against the emulator.

Each ``python``/``bash`` block in README.md sits under an HTML comment readers do not
see: ``<!-- snippet: run -->`` (run here), ``<!-- snippet: clone -->`` (needs this
repository's checkout) or ``<!-- snippet: skip: <why> -->`` (installs packages, serves a
public address, needs Redis...). A new block without one fails the first test. The
``run`` blocks go to ``python``/``bash`` in an empty folder (no ``.env``) with
``MARITACA_API_KEY``/``MARITACA_BASE_URL`` pointing at the emulator, and, when they talk
to ``127.0.0.1:8000``, with ``maritaca-chains serve`` running there (its port put in
their place). Each must exit 0, print something, and reach the emulator (or, for the
emulator's own example, the emulator it starts).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maritaca import local
from maritaca.testing import MaritacaEmulator

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^( *)<!-- snippet: (run|clone|skip: [^>]+) -->\n\1```(\w+)\n(.*?)^\1```",
                   re.S | re.M)
FENCE = re.compile(r"^ *```(python|bash)$", re.M)
DEFAULT_ADDRESS = "127.0.0.1:8000"
REPORT = "O relatório trimestral mostra crescimento de vendas e novos clientes no Nordeste. " * 6


def snippets() -> list[tuple[str, str, str]]:
    """``(marker, language, code)`` of every marked block, in order."""
    text = README.read_text(encoding="utf-8")
    return [(m.group(2), m.group(3), _dedent(m.group(4), len(m.group(1))))
            for m in BLOCK.finditer(text)]


def _dedent(code: str, width: int) -> str:
    return "".join(line[width:] for line in code.splitlines(keepends=True))


RUN = [(language, code) for marker, language, code in snippets() if marker == "run"]


def test_every_code_block_says_whether_it_runs_from_a_pip_install():
    text = README.read_text(encoding="utf-8")
    marked = {m.start(3) - 3 for m in BLOCK.finditer(text)}
    unmarked = [text[m.start():m.end()].strip() + f" (line {text[:m.start()].count(chr(10)) + 1})"
                for m in FENCE.finditer(text)
                if m.start() + len(m.group(0)) - len(m.group(0).lstrip()) not in marked]
    assert not unmarked, f"blocks without a <!-- snippet: ... --> marker: {unmarked}"
    assert len(RUN) >= 10


@pytest.fixture(scope="module")
def emulator() -> Iterator[MaritacaEmulator]:
    with MaritacaEmulator(reply_tokens=20) as emu:
        yield emu


@pytest.fixture(scope="module")
def served(emulator: MaritacaEmulator, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[str]:
    """``maritaca-chains serve`` on a free port, over the emulator: its address."""
    folder = tmp_path_factory.mktemp("server")
    port = local.free_port()
    log = folder / "server.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [str(Path(sys.executable).parent / "maritaca-chains"), "serve", "--port", str(port)],
            cwd=folder, env=_env(emulator, MARITACA_CHAINS_UI="false"), stdout=out,
            stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert child.poll() is None, log.read_text()
            try:
                httpx.get(f"http://{address}/healthz", timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield address
    finally:
        child.terminate()
        child.wait(10)


def _env(emulator: MaritacaEmulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARITACA_")}
    bin_dir = str(Path(sys.executable).parent)  # python, maritaca-chains: as after pip install
    return {**env, "PATH": f"{bin_dir}:{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
            "MARITACA_API_KEY": emulator.api_key or "", "MARITACA_BASE_URL": emulator.base_url,
            **extra}


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("language", "code"), RUN,
                         ids=[f"{n}-{c.splitlines()[0][:40]}" for n, (_, c) in enumerate(RUN)])
def test_readme_snippet_runs_as_written(language: str, code: str, emulator: MaritacaEmulator,
                                        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if DEFAULT_ADDRESS in code:
        code = code.replace(DEFAULT_ADDRESS, request.getfixturevalue("served"))
    (tmp_path / "relatorio.txt").write_text(REPORT, encoding="utf-8")
    before = len(emulator.requests)
    command = [sys.executable, "-c", code] if language == "python" else \
        ["bash", "-e", "-o", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=tmp_path, env=_env(emulator), capture_output=True,
                          text=True, timeout=150)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"printed nothing; stderr: {done.stderr}"
    assert '"detail"' not in done.stdout, done.stdout  # an error body instead of an answer
    if "MaritacaEmulator(" not in code:  # (that one starts an emulator of its own)
        assert len(emulator.requests) > before, "the snippet never reached the model"
