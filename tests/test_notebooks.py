"""The notebooks run top to bottom, as a user would run them, and show what they promise.

Each notebook is executed with nbclient in a fresh kernel from this virtualenv, pointed at
the emulator through the environment (``MARITACA_BASE_URL``/``MARITACA_API_KEY``, and
``MARITACA_CHAINS_URL`` for the LangServe notebook), with a timeout per cell; any error
fails the test. The assertions read the outputs a user would see: the streamed text must
be the emulator's reply to the request it got.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from pydantic import SecretStr

from maritaca import ChatMaritaca, local
from maritaca.testing import MaritacaEmulator, RecordedRequest
from maritaca_chains import create_app
from maritaca_chains.settings import ServerSettings
from tests.conftest import RunningServer

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT = 60  # seconds per cell, emulator runs
REPLY_TOKENS = 30
# slow enough that a `break` after 5 chunks lands mid-stream, fast enough to stay quick
TOKEN_DELAY = 0.01
_KERNEL_PROBE = "import sys; print(sys.executable)"
_OUR_ENV = ("MARITACA_API_KEY", "MARITACA_BASE_URL", "MARITACA_CHAINS_URL", "MARITACA_BACKEND",
            "MARITACA_MODEL")


def run_notebook(name: str, env: Mapping[str, str], cell_timeout: int = CELL_TIMEOUT) -> list[str]:
    """Execute ``notebooks/<name>`` in a fresh venv kernel; return each cell's visible output.

    The ``MARITACA_*`` variables of this process are not passed on: only ``env``'s.
    A last cell (added in memory only) checks the kernel is this virtualenv's Python.
    """
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), \
        f"{name} is saved with outputs: clear them before committing"
    nb.cells.append(nbformat.v4.new_code_cell(_KERNEL_PROBE))
    kernel_env = {k: v for k, v in os.environ.items() if k not in _OUR_ENV}
    kernel_env.update(env)
    kernel_env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # quiets ipykernel's debugger warning
    kernel_env["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"),
                                                    "127.0.0.1", "localhost"]))
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                            allow_errors=False, resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=kernel_env)
    outputs = [_cell_text(cell) for cell in nb.cells]
    assert Path(outputs[-1].strip()) == Path(sys.executable), \
        f"the notebook ran on {outputs[-1].strip()}, not this virtualenv's {sys.executable}"
    return outputs[:-1]


def _cell_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def chat_requests(emu: MaritacaEmulator) -> list[RecordedRequest]:
    return [r for r in emu.requests if r.path.endswith("/chat/completions")]


def reply(emu: MaritacaEmulator, request: RecordedRequest) -> str:
    """What the emulator streamed (or would have streamed in full) for ``request``."""
    assert request.body is not None
    return emu.expected_text(request.body["messages"])


@pytest.fixture
def slow_emu() -> Iterator[MaritacaEmulator]:
    with MaritacaEmulator(reply_tokens=REPLY_TOKENS, token_delay=TOKEN_DELAY) as emulator:
        yield emulator


def emulator_env(emu: MaritacaEmulator) -> dict[str, str]:
    assert emu.api_key is not None
    return {"MARITACA_BASE_URL": emu.base_url, "MARITACA_API_KEY": emu.api_key}


@pytest.mark.timeout(180)
def test_01_streaming_basics(slow_emu: MaritacaEmulator) -> None:
    outputs = run_notebook("01_streaming_basics.ipynb", emulator_env(slow_emu))
    text = "\n".join(outputs)
    requests = chat_requests(slow_emu)
    assert len(requests) == 7
    finished = [r for r in requests if not r.client_disconnected]
    stopped = [r for r in requests if r.client_disconnected]
    assert len(finished) == 5
    for request in finished:  # sync, async, messages, full capture, metadata
        assert reply(slow_emu, request) in text
    assert "Mesma coisa pela soma dos pedaços: True" in text
    assert "model_name: sabia-4-2026-01-06" in text
    assert "finish_reason: stop" in text
    assert f"'output_tokens': {REPLY_TOKENS}" in text
    # both early breaks (sync, and async with aclosing) hung up upstream mid-stream
    assert len(stopped) == 2 and text.count("[parei depois de 5 pedaços]") == 2
    for request in stopped:
        assert request.chunks_sent < REPLY_TOKENS
        first_five = "".join(re.findall(r"\s*\S+", reply(slow_emu, request))[:5])
        assert first_five + "\n[parei depois de 5 pedaços]" in text


@pytest.mark.timeout(180)
def test_02_chains(slow_emu: MaritacaEmulator) -> None:
    outputs = run_notebook("02_chains.ipynb", emulator_env(slow_emu))
    text = "\n".join(outputs)
    requests = chat_requests(slow_emu)
    # story, qa with and without context, short summary, one per part (at least two),
    # final summary
    parts = len(requests) - 5
    assert parts >= 2, "the long text was not summarised map-reduce"
    shown = [r for r in requests if reply(slow_emu, r) in text]
    assert len(shown) == 5, "every reply but the per-part summaries is printed"
    assert requests[-1] in shown
    # the summary's stream is the summary only: no progress lines mixed in
    assert "> parte" not in text and "resumida" not in text


@pytest.mark.timeout(180)
def test_03_astream_events(slow_emu: MaritacaEmulator) -> None:
    outputs = run_notebook("03_astream_events.ipynb", emulator_env(slow_emu))
    text = "\n".join(outputs)
    requests = chat_requests(slow_emu)
    stories, summary_calls = requests[:3], requests[3:]
    for request in stories:  # tokens, final output via on_chain_end, include_types
        assert reply(slow_emu, request) in text
    assert "Saída final: " + reply(slow_emu, stories[1]) in text
    assert "'on_chat_model_stream':" in text and "'on_chain_end':" in text
    assert f"'output_tokens': {REPLY_TOKENS}" in text
    assert f"{len(summary_calls)} chamadas ao modelo;" in text and len(summary_calls) >= 3
    # progress as summarize_progress custom events: one per part, before the summary
    parts = len(summary_calls) - 1
    assert f"> resumindo {parts} partes…" in text
    for done in range(1, parts + 1):
        assert f"> parte {done}/{parts} resumida" in text
    final = reply(slow_emu, summary_calls[-1])
    assert final in text and text.index(final) > text.index(f"> parte {parts}/{parts}")


@pytest.mark.timeout(180)
def test_04_remote_runnable(slow_emu: MaritacaEmulator) -> None:
    assert slow_emu.api_key is not None
    model = ChatMaritaca(base_url=slow_emu.base_url, api_key=SecretStr(slow_emu.api_key),
                         max_retries=0)
    app = create_app(ServerSettings(_env_file=None), model=model)  # type: ignore[call-arg]
    with RunningServer(app) as server:
        outputs = run_notebook("04_remote_runnable.ipynb", {"MARITACA_CHAINS_URL": server.url})
    text = "\n".join(outputs)
    assert f"Servidor em {server.url} - backend custom - modelo sabia-4" in text
    requests = chat_requests(slow_emu)
    # stream, astream, invoke, batch of two, astream_events, invoke with temperature 0
    assert len(requests) == 7
    for request in requests:
        assert reply(slow_emu, request) in text
    assert "## o Cristo Redentor\n" in text and "## as Cataratas do Iguaçu\n" in text
    temperatures = [r.body.get("temperature") for r in requests if r.body is not None]
    assert temperatures[-1] == 0 and temperatures[:-1] == [0.7] * 6  # the chains' default


@pytest.mark.local_model
@pytest.mark.timeout(420)
def test_01_on_the_embedded_model() -> None:
    if not local.is_installed():
        pytest.skip("the embedded llama.cpp backend is not installed (make install builds it)")
    outputs = run_notebook("01_streaming_basics.ipynb", {}, cell_timeout=180)
    text = "\n".join(outputs)
    assert f"Modelo embutido {local.MODEL_NAME} em http://127.0.0.1:" in text
    assert f"model_name: {local.MODEL_NAME}" in text
    assert re.search(r"finish_reason: (stop|length)", text)
    assert "Mesma coisa pela soma dos pedaços: True" in text
    assert text.count("[parei depois de 5 pedaços]") == 2
    assert "Modelo embutido parado." in text
