"""The processes a server bench measures: the servers under test and the emulator they
relay, each in a child process on 127.0.0.1, with their CPU, memory and descriptors.

Every process a bench starts is stopped by that bench, by its PID.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from maritaca.local import free_port
from maritaca.testing import terminate

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent

# The full servers, which every server bench compares; "floor" answers /story/stream only
CONTENDERS = ("ours", "chatopenai")
KINDS = (*CONTENDERS, "floor", "langserve")
LABELS = {"ours": "ChatMaritaca server (ours)",
          "chatopenai": "ChatOpenAI server",
          "floor": "bare relay (floor)",
          "langserve": "LangServe alone, our chain",
          "direct": "emulator direct (no server)"}
# uvicorn app and --app-dir (put on the child's sys.path) of each kind: the root for
# server.py, bench/ for the others (the packages themselves are installed)
APPS = {"ours": ("server:app_factory", ROOT),
        "chatopenai": ("_openai_app:app_factory", BENCH),
        "floor": ("_floor_app:app_factory", BENCH),
        "langserve": ("_langserve_app:app_factory", BENCH)}


class ServerProcess:
    """One of the servers under test, as uvicorn in a child process on 127.0.0.1.

    ``kind`` is ``ours`` (``server:app_factory``, the README's deployment, backend
    chosen by the environment: MARITACA_API_KEY + MARITACA_BASE_URL -> Maritaca's API
    at that URL) or ``chatopenai`` (``_openai_app:app_factory`` from ``bench/``: the
    same app built by ``create_app`` with ``ChatOpenAI(base_url=...)`` as model) or
    ``floor`` (``_floor_app:app_factory``: a bare Starlette + httpx relay of
    ``/story/stream`` only, what the platform alone costs) or ``langserve``
    (``_langserve_app:app_factory``: LangServe's ``add_routes`` for our story chain on a
    bare FastAPI app, what LangServe alone costs).
    ``cpus`` pins the server (and its workers) to those CPUs with ``taskset``.
    CPU and RSS are summed over the process and its children (uvicorn's workers).
    """

    def __init__(self, kind: str, upstream_url: str, api_key: str, *, workers: int = 1,
                 extra_env: dict[str, str] | None = None, cpus: str | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app, app_dir = APPS[kind]
        extra_env = dict(extra_env or {})
        # BENCH_APP_DIR=<a checkout of another commit>: that commit's server (its
        # packages come first on the path), side by side with this one: before/after
        app_dir = Path(extra_env.pop("BENCH_APP_DIR", app_dir))
        pin = ["taskset", "-c", cpus] if cpus else []
        self.argv = [*pin, sys.executable, "-m", "uvicorn", app, "--factory",
                     "--app-dir", str(app_dir), "--host", "127.0.0.1",
                     "--port", str(self.port), "--workers", str(workers),
                     "--log-level", "warning", "--no-access-log",
                     "--timeout-graceful-shutdown", "2"]
        self.env = {**os.environ, "MARITACA_API_KEY": api_key,
                    "MARITACA_BASE_URL": upstream_url, "MARITACA_BACKEND": "maritaca",
                    "MARITACA_CHAINS_LOG_LEVEL": "warning",
                    **(extra_env or {})}
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 180.0) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} server exited ({self.proc.returncode})")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        break
                time.sleep(0.1)
            else:
                self.stop()
                raise RuntimeError(f"{self.kind} server did not answer /healthz in {timeout} s")
        # every worker up: each answers /healthz once it is serving
        while len(self.worker_pids()) < self.workers and time.monotonic() < deadline:
            time.sleep(0.1)

    def processes(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> list[int]:
        procs = self.processes()
        if self.workers <= 1:
            return [p.pid for p in procs[:1]]
        return [p.pid for p in procs[1:] if _is_worker(p)]

    def cpu(self) -> float:
        """CPU seconds (user + system) used so far by the server and its workers."""
        total = 0.0
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def worker_cpu(self) -> list[float]:
        """CPU seconds of each serving process (to see how evenly the load was spread)."""
        out = []
        for pid in self.worker_pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = psutil.Process(pid).cpu_times()
                out.append(times.user + times.system)
        return out

    def rss(self) -> int:
        """Resident bytes of the serving processes (the workers, or the single process)."""
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                if self.workers <= 1 or _is_worker(proc):
                    total += proc.memory_info().rss
        return total

    def open_fds(self) -> int:
        return sum(p.num_fds() for p in self.processes())

    def upstream_connections(self, upstream_port: int) -> int:
        """Established TCP connections from the server to ``upstream_port``."""
        count = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                count += sum(1 for c in proc.net_connections("tcp")
                             if c.raddr and c.raddr.port == upstream_port
                             and c.status == psutil.CONN_ESTABLISHED)
        return count

    def stop(self) -> None:
        if self.proc is None:
            return
        children = self.processes()[1:]
        terminate(self.proc, timeout=15)
        for child in children:  # workers left behind by a killed supervisor
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.is_running():
                    child.kill()
        self.proc = None


def _is_worker(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        cmd = " ".join(proc.cmdline())
        return "multiprocessing" in cmd and "resource_tracker" not in cmd
    return False


@contextlib.contextmanager
def emulator(**options: Any) -> Iterator[Any]:
    """The emulator in a child process (its CPU never counted as the server's)."""
    from maritaca.testing import MaritacaEmulator

    options.setdefault("first_delta_content", "")
    options.setdefault("max_records", 20_000)
    with MaritacaEmulator.subprocess(**options) as emu:
        yield emu


def emulator_cpu(emu: Any) -> float:
    with contextlib.suppress(psutil.NoSuchProcess):
        times = psutil.Process(emu.pid).cpu_times()
        return float(times.user + times.system)
    return 0.0


