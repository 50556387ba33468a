"""The JavaScript clients people use, from Node against a real uvicorn over the emulator:
the ``openai`` npm package on /v1, and the ``ai`` package's ``DefaultChatTransport`` +
``readUIMessageStream`` on /<chain>/ai-sdk (stream, errors, resume after a dropped
connection). ``tests/js/clients.mjs`` runs one scenario and prints what it saw.

The packages come from ``tests/js/package-lock.json`` (``make install-js``, which ``make
test`` runs); the tests skip only when node is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maritaca.testing import MaritacaEmulator, Scenario
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer, emulator_model

JS = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(NODE is None, reason="node is not installed")]


def node(scenario: str, url: str) -> dict[str, Any]:
    assert (JS / "node_modules" / "ai").is_dir(), "run `make install-js` (npm ci in tests/js)"
    done = subprocess.run([str(NODE), "clients.mjs", scenario, url], cwd=JS,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, f"{scenario}: {done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def paced() -> Iterator[tuple[MaritacaEmulator, RunningServer]]:
    """60-token answers at 20 ms a token: time to drop a connection mid-answer."""
    with MaritacaEmulator(reply_tokens=60, token_delay=0.02) as emu:
        app = create_app(ServerSettings(_env_file=None),  # type: ignore[call-arg]
                         model=emulator_model(emu))
        with RunningServer(app) as server:
            yield emu, server


def expected(emu: MaritacaEmulator, index: int = -1) -> str:
    body = emu.requests[index].body
    assert body is not None
    return emu.expected_text(body["messages"])


def test_openai_npm_lists_streams_and_completes(live_server, emu):
    models = node("openai-models", live_server.url)["models"]
    assert models[:3] == ["story", "qa", "summarize"] and "sabia-4" in models
    streamed = node("openai-stream", live_server.url)
    assert streamed["text"] == expected(emu) and streamed["finish"] == "stop"
    assert streamed["usage"]["completion_tokens"] == emu.requests[-1].chunks_sent
    assert streamed["cost"] > 0
    sent = emu.requests[-1].body
    assert sent is not None and (sent["max_tokens"], sent["temperature"]) == (300, 0)
    whole = node("openai-complete", live_server.url)
    assert whole["object"] == "chat.completion" and whole["text"] == expected(emu)
    assert whole["usage"]["total_tokens"] > 0 and whole["cost"] > 0


def test_openai_npm_errors(live_server, emu):
    errors = node("openai-errors", live_server.url)
    assert errors["unknown"]["name"] == "NotFoundError" and errors["unknown"]["status"] == 404
    assert errors["unknown"]["code"] == "model_not_found"
    assert errors["invalid"]["name"] == "UnprocessableEntityError"
    assert errors["invalid"]["param"] == "input.length"
    emu.enqueue(Scenario.error_event(after_chunks=3, message="modelo sobrecarregado"))
    broken = node("openai-midstream-error", live_server.url)
    assert broken["text"] and expected(emu).startswith(broken["text"])
    assert broken["error"]["code"] == "upstream_stream_broken"
    assert "modelo sobrecarregado" in broken["error"]["message"]


def test_ai_sdk_transport_streams_the_chain(live_server, emu):
    seen = node("ai-stream", live_server.url)
    assert seen["errors"] == [] and seen["role"] == "assistant"
    assert seen["text"] == expected(emu)
    assert seen["kinds"] == ["text", "data-usage"]
    assert seen["usage"]["output_tokens"] == emu.requests[-1].chunks_sent
    sent = emu.requests[-1].body  # the body's input reached the chain: a long story's budget
    assert sent is not None and sent["max_tokens"] > 300


def test_ai_sdk_errors_are_readable(live_server, emu):
    invalid = node("ai-invalid", live_server.url)["error"]
    assert invalid["name"] == "APICallError" and invalid["status"] == 422
    assert "length" in invalid["message"]
    emu.enqueue(Scenario.server_error())
    failed = node("ai-error", live_server.url)
    assert len(failed["errors"]) == 1 and "upstream_error" in failed["errors"][0]


def test_ai_sdk_resumes_after_a_dropped_connection(paced):
    emu, server = paced
    seen = node("ai-resume", server.url)
    assert seen["before"] and seen["resumed"] == expected(emu)
    assert seen["resumed"].startswith(seen["before"]) and seen["errors"] == []
    assert seen["againIsNull"], "after the whole answer was read, resuming gives 204"
    assert len(emu.requests) == 1 and not emu.requests[0].client_disconnected
