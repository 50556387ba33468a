"""Serve the emulator app: uvicorn on a background thread, or in a child process.

The thread has its own event loop, so the emulator works the same under sync tests,
async tests (whatever their loop) and notebooks. Stopping aborts open streams first, so
it never waits for a slow stream to finish.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from .._local_process import stop_process
from ._app import EmulatorApp

__all__ = ["ServerThread", "closed_port_url", "spawn", "terminate"]

_reserved: list[socket.socket] = []


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens: connections are refused at once.

    Use it to test connection errors. The port stays bound (never listening) for the
    life of the process, so no other server can take it meanwhile.
    """
    if not _reserved:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        _reserved.append(sock)
        atexit.register(sock.close)
    return f"http://127.0.0.1:{_reserved[0].getsockname()[1]}"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: the thread runs its own loop, so uvicorn's ``loop`` option
    never applies."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


class ServerThread:
    """Run an :class:`EmulatorApp` with uvicorn in a daemon thread."""

    def __init__(self, app: EmulatorApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host, self.port = host, port
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", log_config=None, access_log=False,
            http="httptools" if importlib.util.find_spec("httptools") else "h11",
            lifespan="off", proxy_headers=False, server_header=False,
            timeout_graceful_shutdown=1, timeout_keep_alive=30,
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        self._ready.clear()
        self._error = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True,
                                        name=f"maritaca-emulator-{self.port}")
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop(timeout=1.0)
            raise RuntimeError("the emulator failed to start") from self._error

    def stop(self, timeout: float = 3.0) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        self._thread = None

    def _run(self, sock: socket.socket) -> None:
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self._serve(sock))
        except BaseException as exc:  # report to start(), never crash the host process
            self._error = exc
        finally:
            sock.close()
            self._ready.set()

    async def _serve(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = uvicorn.Server(self.config)
        if not self.config.loaded:
            self.config.load()
        server.lifespan = self.config.lifespan_class(self.config)
        await server.startup(sockets=[sock])
        self._ready.set()
        await self._stop.wait()
        # Fast shutdown: uvicorn's own waits >= 0.1 s and for every stream to end.
        self.app.abort_all()
        for listener in server.servers:
            listener.close()
        state = server.server_state
        for conn in list(state.connections):
            conn.shutdown()
        deadline = time.monotonic() + 1.0
        while (state.connections or state.tasks) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)  # uvicorn offers no event for "all connections closed"
        for task in list(state.tasks):
            task.cancel()


def spawn(argv: list[str], timeout: float = 20.0) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m maritaca.testing`` in a child process; return it and its base URL.

    The child imports this very copy of the package (its directory goes first on
    ``PYTHONPATH``), and the package is import-light: no langchain-core in the child.
    """
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    proc = subprocess.Popen([sys.executable, "-m", "maritaca.testing", *argv],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                line = proc.stdout.readline()
                if line.startswith("READY "):
                    return proc, line.split()[1]
                if not line and proc.poll() is not None:
                    break
    finally:
        sel.close()
    terminate(proc)
    raise RuntimeError(f"the emulator subprocess did not start (exit code {proc.poll()})")


def terminate(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Stop a child process (an emulator, a server under test): SIGTERM, then SIGKILL if
    it has not exited within ``timeout``; closes its stdout pipe."""
    stop_process(proc, timeout)
    if proc.stdout is not None:
        proc.stdout.close()
