"""Shared pieces of the server benchmarks: servers and the emulator in child processes,
their CPU and memory, and a cheap asyncio SSE client that is never the bottleneck.

Every process a bench starts is stopped by that bench, by its PID; servers listen on
127.0.0.1 only. Import from a bench script with ``from _common import ...`` (the
scripts put ``bench/`` and the repository root on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for _path in (str(ROOT), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from maritaca.testing._runner import terminate  # noqa: E402

CONTENDERS = ("ours", "chatopenai")
LABELS = {"ours": "ChatMaritaca server (ours)",
          "chatopenai": "ChatOpenAI server",
          "direct": "emulator direct (floor)"}


# ------------------------------------------------------------------------------ system

def raise_nofile() -> int:
    """Raise this process's open-file soft limit to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def install_uvloop() -> str:
    """Use uvloop for this process's asyncio loops when it is installed."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def run_bench(title: str, run: Callable[[Any], Awaitable[None]], args: Any) -> None:
    """The server benches' common start and end: raise the open-file limit, put the load
    client on uvloop, print the machine's load, run ``run(args)`` and its duration."""
    nofile = raise_nofile()
    loop_name = install_uvloop()
    print(f"{title}: {load_average()}; open-file limit {nofile}; client loop {loop_name}")
    started = time.monotonic()
    asyncio.run(run(args))
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


# ------------------------------------------------------------------------ the servers

class ServerProcess:
    """One of the servers under test, as uvicorn in a child process on 127.0.0.1.

    ``kind`` is ``ours`` (``server:app_factory``, the README's deployment, backend
    chosen by the environment: MARITACA_API_KEY + MARITACA_BASE_URL -> Maritaca's API
    at that URL) or ``chatopenai`` (``_openai_app:app_factory``: the same chains, the
    same LangServe routes and middleware, with ``ChatOpenAI(base_url=...)`` as model).
    CPU and RSS are summed over the process and its children (uvicorn's workers).
    """

    def __init__(self, kind: str, upstream_url: str, api_key: str, *, workers: int = 1,
                 extra_env: dict[str, str] | None = None) -> None:
        if kind not in CONTENDERS:
            raise ValueError(f"kind must be one of {CONTENDERS}")
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = "server:app_factory" if kind == "ours" else "_openai_app:app_factory"
        self.argv = [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1",
                     "--port", str(self.port), "--workers", str(workers),
                     "--log-level", "warning", "--no-access-log",
                     "--timeout-graceful-shutdown", "2"]
        self.env = {**os.environ, "MARITACA_API_KEY": api_key,
                    "MARITACA_BASE_URL": upstream_url, "MARITACA_BACKEND": "maritaca",
                    "MARITACA_CHAINS_LOG_LEVEL": "warning",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH)]),
                    **(extra_env or {})}
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
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


# ------------------------------------------------------------------- the SSE client

# The chains send max_tokens (default 2048) and the emulator honours it: long benchmark
# streams ask for the most the server allows. The ChatOpenAI-based chains ignore it.
LONG: dict[str, Any] = {"configurable": {"max_tokens": 32_000}}


def chain_body(topic: str = "Brasil", config: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"input": {"topic": topic}}
    if config is not None:
        body["config"] = config
    return json.dumps(body).encode()


def chat_body(prompt: str = "Conte uma história sobre o Brasil.") -> bytes:
    return json.dumps({"model": "sabia-4", "stream": True,
                       "messages": [{"role": "user", "content": prompt}]}).encode()


# What counts as one relayed token on each face.
TOKEN_MARKERS = {
    "stream": b"event: data",                       # LangServe /stream: one per chunk
    "stream_events": b'"on_chat_model_stream"',      # one per model chunk
    "direct": b'"delta":{"content":"',               # the emulator's own SSE
}
END_MARKERS = (b"event: end", b"data: [DONE]")
ERROR_MARKERS = (b"event: error", b'data: {"error"')


class _Counter:
    """Counts a marker in a byte stream that arrives in arbitrary pieces."""

    __slots__ = ("marker", "keep", "tail", "count")

    def __init__(self, marker: bytes) -> None:
        self.marker, self.keep = marker, len(marker) - 1
        self.tail = b""
        self.count = 0

    def feed(self, data: bytes) -> int:
        buf = self.tail + data
        found = buf.count(self.marker)
        self.count += found
        self.tail = buf[-self.keep:] if self.keep else b""
        return found


@dataclass
class StreamResult:
    """What one SSE stream did, as the client saw it (``time.monotonic()`` values)."""

    started: float = 0.0
    status: int = 0
    tokens: int = 0
    first_token: float | None = None
    last_token: float | None = None
    gaps: list[float] = field(default_factory=list)
    gap_at: list[float] = field(default_factory=list)  # when each gap ended
    ended: bool = False
    error: bool = False
    closed_at: float | None = None      # when we hung up (cancellation)
    failure: str | None = None           # connection error, timeout
    body_head: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.ended and not self.error and self.failure is None


class SSEStream(asyncio.Protocol):
    """One POST with an SSE answer, over a raw connection: counts token markers and
    records when each arrives. Cheaper per event than any HTTP library, so the client
    stays far from being the bottleneck."""

    def __init__(self, request: bytes, marker: bytes, *, record_gaps: bool = False,
                 hang_up_after: int | None = None) -> None:
        self.request = request
        self.tokens = _Counter(marker)
        self.ends = [_Counter(m) for m in END_MARKERS]
        self.errors = [_Counter(m) for m in ERROR_MARKERS]
        self.record_gaps = record_gaps
        self.hang_up_after = hang_up_after
        self.result = StreamResult(started=time.monotonic())
        self.done: asyncio.Future[StreamResult] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._last: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        res = self.result
        if not res.status:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            line = self._head[:self._head.find(b"\r\n")].split()
            res.status = int(line[1]) if len(line) > 1 and line[1].isdigit() else -1
            data = self._head[end + 4:]
            self._head = b""
            if res.status != 200:
                res.body_head = data[:500]
        if len(res.body_head) < 500 and res.status != 200:
            res.body_head += data[:500 - len(res.body_head)]
        new = self.tokens.feed(data)
        if new:
            res.tokens += new
            if res.first_token is None:
                res.first_token = now
            elif self.record_gaps and self._last is not None:
                res.gaps.append(now - self._last)
                res.gaps.extend([0.0] * (new - 1))
                res.gap_at.extend([now] * new)
            self._last = res.last_token = now
        if any(c.feed(data) for c in self.errors):
            res.error = True
        if any(c.feed(data) for c in self.ends):
            res.ended = True
        if self.hang_up_after is not None and res.tokens >= self.hang_up_after \
                and res.closed_at is None:
            res.closed_at = time.monotonic()
            assert self.transport is not None
            self.transport.close()
        elif res.ended or res.error or (res.status not in (0, 200)):
            if res.status != 200 and not (res.ended or res.error):
                return  # read the error body to its end
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.result.failure is None and self.result.closed_at is None:
            self.result.failure = f"{type(exc).__name__}: {exc}"
        if not self.done.done():
            self.done.set_result(self.result)


def http_request(host: str, port: int, path: str, body: bytes,
                 headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
            ).encode() + body


async def sse_stream(url: str, path: str, body: bytes, marker: bytes, *,
                     headers: dict[str, str] | None = None, record_gaps: bool = False,
                     hang_up_after: int | None = None, limit: float = 120.0
                     ) -> StreamResult:
    """POST ``body`` to ``url + path`` and read the SSE answer to its end (or hang up
    after ``hang_up_after`` tokens), giving up after ``limit`` seconds."""
    host, port = _host_port(url)
    loop = asyncio.get_running_loop()
    protocol = SSEStream(http_request(host, port, path, body, headers), marker,
                         record_gaps=record_gaps, hang_up_after=hang_up_after)
    try:
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: protocol, host, port), limit)
    except (TimeoutError, OSError) as exc:
        protocol.result.failure = f"connect: {type(exc).__name__}: {exc}"
        return protocol.result
    try:
        return await asyncio.wait_for(asyncio.shield(protocol.done), limit)
    except TimeoutError:
        protocol.result.failure = "timeout"
        transport.abort()
        return protocol.result


def _host_port(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def auth_header(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
