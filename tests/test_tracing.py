"""Tracing the LangChain way: with LANGSMITH_TRACING=true, a server process sends its
runs, usage included, through langchain-core's own tracer to LANGSMITH_ENDPOINT (here a
small capture server on loopback, stopped by the test)."""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from maritaca.testing import MaritacaEmulator
from tests.child_servers import start_replicas


class Capture(ThreadingHTTPServer):
    """Answers every request with ``{}`` and keeps what was POSTed/PATCHed."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[tuple[str, str, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def text(self) -> str:
        return "\n".join(body.decode("utf-8", errors="replace") for *_, body in self.bodies)


class _Handler(BaseHTTPRequestHandler):
    server: Capture

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        encoding = (self.headers.get("content-encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "zstd":
            import zstandard

            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        self.server.bodies.append((self.command, self.path, body))
        reply = b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PATCH = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def capture() -> Iterator[Capture]:
    server = Capture()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_langsmith_tracing_sends_the_chain_run_with_its_usage(capture):
    with MaritacaEmulator(reply_tokens=12) as emu, start_replicas(
            emu, 1, LANGSMITH_TRACING="true", LANGSMITH_ENDPOINT=capture.url,
            LANGSMITH_API_KEY="lsv2-test-key", LANGSMITH_PROJECT="maritaca-chains-test",
    ) as (server,):
        with httpx.Client(base_url=server, timeout=30) as http:
            events = http.post("/story/stream_events", json={"input": {"topic": "Brasil"}})
        end = next(json.loads(line[6:]) for line in events.text.splitlines()
                   if line.startswith("data: ") and '"on_chat_model_end"' in line)
        usage = end["data"]["output"]["usage_metadata"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the tracer sends in the background
            traced = capture.text()
            if "ChatMaritaca" in traced and "usage_metadata" in traced:
                break
            time.sleep(0.2)
    posted = [path for method, path, _ in capture.bodies if method in {"POST", "PATCH"}]
    assert any(path.startswith("/runs") for path in posted), posted
    traced = capture.text()
    assert "ChatMaritaca" in traced and "maritaca-chains-test" in traced
    for field in ("input_tokens", "output_tokens"):
        assert re.search(rf'"{field}":\s*{usage[field]}\b', traced), field
