"""The AI SDK's ``useChat`` (React, bundled from npm with esbuild) in a real headless
Chromium, streaming a chain from /story/ai-sdk.

The page (``tests/js/page``) is served by a static server on another port, as a Next.js
front end would be: the chain server allows it with ``MARITACA_CHAINS_CORS_ORIGINS``.
The emulator paces its tokens so the text visibly grows; the test samples it while it
streams, then compares it with the emulator's reply. The screenshot goes to
``test-artifacts/ai-sdk-chat.png``. Skips without Debian's chromium or without node.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from maritaca.testing import MaritacaEmulator
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.browser_support import ARTIFACTS, BROWSER_MARKS, launched
from tests.conftest import RunningServer, emulator_model

JS = Path(__file__).resolve().parent / "js"
TOKENS, DELAY = 40, 0.05  # a 2 s answer

pytestmark = [
    *BROWSER_MARKS, pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page_site(tmp_path: Path) -> Iterator[str]:
    """The page and its esbuild bundle, served from 127.0.0.1 on a port of its own."""
    esbuild = JS / "node_modules" / ".bin" / "esbuild"
    assert esbuild.exists(), "run `make install-js` (npm ci in tests/js)"
    subprocess.run([str(esbuild), "page/chat-page.jsx", "--bundle", "--format=iife",
                    "--jsx=automatic", "--minify", '--define:process.env.NODE_ENV="production"',
                    f"--outfile={tmp_path / 'chat-page.js'}", "--log-level=error"],
                   cwd=JS, check=True, timeout=60)
    shutil.copy(JS / "page" / "index.html", tmp_path / "index.html")
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(_Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_use_chat_streams_a_chain_in_chromium(page_site):
    settings = ServerSettings(_env_file=None, MARITACA_CHAINS_CORS_ORIGINS=page_site)  # type: ignore[call-arg]
    with MaritacaEmulator(reply_tokens=TOKENS, token_delay=DELAY) as emu, \
            RunningServer(create_app(settings, model=emulator_model(emu))) as server, \
            launched() as browser:
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(f"{page_site}/index.html?api={server.url}/story/ai-sdk")
        page.get_by_label("Tema da história").fill("um sabiá que aprendeu a programar")
        page.get_by_role("button", name="Enviar").click()
        answer = page.locator("article.assistant .texto")
        answer.wait_for(timeout=20_000)
        lengths = []
        deadline = time.monotonic() + 20
        while page.locator("#estado").get_attribute("data-status") != "ready" \
                and time.monotonic() < deadline:
            lengths.append(len(answer.inner_text()))
            time.sleep(0.1)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(animations="disabled", path=str(ARTIFACTS / "ai-sdk-chat.png"), full_page=True)
        body = emu.requests[-1].body
        assert body is not None
        assert answer.inner_text() == emu.expected_text(body["messages"])
        assert "um sabiá que aprendeu a programar" in body["messages"][-1]["content"]
        # it streamed: the page showed the text growing, not all at once
        growing = sorted({n for n in lengths if n})
        assert len(growing) >= 3, lengths
        assert "tokens · R$" in page.locator("article.assistant .custo").inner_text()
        assert page.get_by_role("alert").count() == 0 and problems == []
