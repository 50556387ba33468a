"""An offline Maritaca API: a real HTTP server on 127.0.0.1 that speaks the wire.

Use it to test code that calls Maritaca (``ChatMaritaca``, ``ChatOpenAI`` pointed at
Maritaca, plain httpx) without a key or a network, and to benchmark clients. It streams
SSE chunks like the real API (role chunk with ``content`` ``""`` or ``null``, one chunk
per token, ``finish_reason``, usage with ``include_usage``, ``[DONE]``), answers forced
tool calls and ``response_format`` with JSON valid against the given schema, and plays
scripted failures: 401, 400/422, context too long, 429 with ``Retry-After``, 5xx, slow
first token, a stream that breaks off, an error event mid-stream. It records every
request (key redacted), including when the client hung up::

    import httpx
    from maritaca.testing import MaritacaEmulator, Scenario

    with MaritacaEmulator() as emu:
        emu.enqueue(Scenario.rate_limit(retry_after=1.5))
        headers = {"Authorization": f"Bearer {emu.api_key}"}
        body = {"model": "sabia-4", "messages": [{"role": "user", "content": "Olá!"}]}
        first = httpx.post(f"{emu.base_url}/chat/completions", json=body, headers=headers)
        assert first.status_code == 429 and first.headers["retry-after"] == "1.5"
        second = httpx.post(f"{emu.base_url}/chat/completions", json=body, headers=headers)
        text = second.json()["choices"][0]["message"]["content"]
        assert text == emu.expected_text(body["messages"])
        assert [r.status for r in emu.requests] == [429, 200]

In pytest, add ``pytest_plugins = ["maritaca.testing.pytest_plugin"]`` to a conftest and
take the ``maritaca_emulator`` fixture. For benchmarks, ``MaritacaEmulator.subprocess()``
runs it in a child process (``terminate`` stops any such child: SIGTERM, then SIGKILL);
``python -m maritaca.testing --help`` serves it by hand. The package loads neither
langchain-core nor the rest of ``maritaca``: only the model catalogue, ``maritaca.models``.
"""

from ._emulator import MaritacaEmulator, SubprocessEmulator
from ._records import RecordedRequest
from ._runner import closed_port_url, terminate
from ._scenarios import Scenario

__all__ = [
    "MaritacaEmulator",
    "RecordedRequest",
    "Scenario",
    "SubprocessEmulator",
    "closed_port_url",
    "terminate",
]
