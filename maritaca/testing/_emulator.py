"""``MaritacaEmulator``, the object tests hold, and ``SubprocessEmulator``, its twin in a
child process. Start one, point a client at ``base_url``, queue scenarios, assert on
``requests``."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from ._app import EmulatorApp
from ._cli import argv_from_config
from ._records import RecordedRequest
from ._runner import ServerThread, spawn, terminate
from ._scenarios import FAULTS, Scenario
from ._state import EmulatorConfig, EmulatorState, FirstDelta

__all__ = ["MaritacaEmulator", "SubprocessEmulator"]

_Messages = Sequence[Mapping[str, Any]]


class _ContextManagers:
    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)


class MaritacaEmulator(_ContextManagers):
    """A real HTTP server on 127.0.0.1 that speaks Maritaca's chat-completions wire.

    Use it for offline tests of anything that calls the Maritaca API: start it with
    ``with`` (or ``async with``), give your client ``emu.base_url`` and ``emu.api_key``.
    uvicorn runs in a background thread with its own event loop; ``stop()`` (the end of
    the ``with``) aborts open streams and returns within about a second.

    Options: ``reply`` fixes the reply text (else it is derived from the last user
    message, ``reply_tokens`` words long); ``token_delay``/``first_token_delay`` pace the
    stream; ``fault_rate`` gives that share of requests a random fault from ``faults``
    (names or :class:`Scenario` objects), drawn from an RNG seeded with ``fault_seed``;
    ``model_name_suffix`` is appended to the model name the server reports (a dated
    name is kept); ``first_delta_content`` is the first delta's content, ``""``,
    ``None`` or ``"alternate"`` (``""`` on even streams, ``null`` on odd ones);
    ``max_records`` bounds the records kept (oldest dropped first) for long soak runs.

    Non-streaming answers wait as long as the stream would take
    (``first_token_delay + tokens * token_delay``) before responding.
    """

    def __init__(
        self,
        api_key: str | None = "test-key",
        reply: str | None = None,
        reply_tokens: int = 40,
        token_delay: float = 0.0,
        first_token_delay: float = 0.0,
        fault_rate: float = 0.0,
        fault_seed: int = 0,
        faults: Sequence[str | Scenario] = FAULTS,
        model_name_suffix: str = "-2026-01-06",
        host: str = "127.0.0.1",
        port: int = 0,
        first_delta_content: FirstDelta = "alternate",
        max_records: int = 100_000,
    ) -> None:
        self.config = EmulatorConfig(
            api_key=api_key, reply=reply, reply_tokens=reply_tokens, token_delay=token_delay,
            first_token_delay=first_token_delay, fault_rate=fault_rate, fault_seed=fault_seed,
            faults=tuple(faults), model_name_suffix=model_name_suffix,
            first_delta_content=first_delta_content, max_records=max_records,
        )
        self._state = EmulatorState(self.config)
        self.app = EmulatorApp(self._state)
        self._server = ServerThread(self.app, host, port)
        self._started = False

    @classmethod
    def subprocess(cls, host: str = "127.0.0.1", port: int = 0, **options: Any
                   ) -> SubprocessEmulator:
        """The same emulator in a child process (``python -m maritaca.testing``).

        Use it for benchmarks, so the emulator's CPU is not counted as the client's. It
        takes the same options and has the same attributes; ``requests`` are snapshots
        fetched over HTTP.
        """
        return SubprocessEmulator(host=host, port=port, **options)

    def start(self) -> None:
        """Start serving (``with`` does it for you)."""
        self._server.start()
        self._started = True

    def stop(self) -> None:
        """Abort open streams and stop the server."""
        self._server.stop()
        self._started = False

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``; routes are ``/chat/completions`` and ``/models``."""
        if not self._started:
            raise RuntimeError("start the emulator first (with MaritacaEmulator() as emu: ...)")
        return self._server.base_url

    @property
    def api_key(self) -> str | None:
        """The key the emulator accepts; ``None`` accepts any or none."""
        return self.config.api_key

    @property
    def requests(self) -> list[RecordedRequest]:
        """API requests (``/chat/completions``, ``/models``) so far, in arrival order.

        Live objects: their ``chunks_sent``/``finished_at``/disconnect fields update while
        the response runs.
        """
        return self._state.requests()

    def enqueue(self, *scenarios: Scenario) -> None:
        """Queue scenarios; each applies to one next ``/chat/completions`` request."""
        self._state.enqueue(scenarios)

    def reset(self) -> None:
        """Forget queued scenarios, records, the prompt cache and the stream count."""
        self._state.reset()

    def expected_text(self, messages: _Messages, reply_tokens: int | None = None) -> str:
        """The reply text the emulator gives to ``messages`` by default.

        It is the text before ``stop``/``max_tokens`` truncation, and ignores queued
        scenarios, tools and ``response_format``.
        """
        return self._state.expected_text(messages, reply_tokens)


class SubprocessEmulator(_ContextManagers):
    """:class:`MaritacaEmulator` running in a child process; see
    :meth:`MaritacaEmulator.subprocess`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        options["faults"] = tuple(options.get("faults", FAULTS))
        self.config = EmulatorConfig(**options)
        self._argv = argv_from_config(self.config, host, port)
        self._proc: subprocess.Popen[str] | None = None
        self._client: httpx.Client | None = None
        self._base_url: str | None = None

    def start(self) -> None:
        self._proc, self._base_url = spawn(self._argv)
        try:
            self._client = httpx.Client(base_url=self._base_url + "/_emulator", timeout=30)
        except BaseException:
            self.stop()  # never leave the child behind when start fails half-way
            raise

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None

    @property
    def pid(self) -> int | None:
        """The child's process id (e.g. to measure its CPU)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("start the emulator first")
        return self._base_url

    @property
    def api_key(self) -> str | None:
        return self.config.api_key

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        if self._client is None:
            raise RuntimeError("start the emulator first")
        response = self._client.request(method, path, json=json)
        response.raise_for_status()
        return response.json()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the records; read it again to refresh."""
        return [RecordedRequest.from_dict(d) for d in self._call("GET", "/requests")]

    def enqueue(self, *scenarios: Scenario) -> None:
        self._call("POST", "/scenarios", [s.to_dict() for s in scenarios])

    def reset(self) -> None:
        self._call("POST", "/reset")

    def expected_text(self, messages: _Messages, reply_tokens: int | None = None) -> str:
        text: str = self._call("POST", "/expected_text",
                               {"messages": list(messages), "reply_tokens": reply_tokens})["text"]
        return text
