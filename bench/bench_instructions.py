"""What starting a stream costs, counted in instructions: two runs agree to 0.2%, where
CPU time on this machine drifts by a third between runs.

Run: ``.venv/bin/python bench/bench_instructions.py [--requests 100] [--warmup 60] [--tokens 5]
[--cases floor:stream,ours:stream,ours:stream_events] [--baseline DIR] [--quick]``
(needs valgrind: ``apt-get install valgrind``; ``--quick``, as ``make bench`` runs it,
measures 40 requests after 30, and says it skipped when valgrind is not there).

Each case runs in a child process under valgrind's callgrind with instrumentation off.
The child builds the app in process (ours: ``server:app_factory``, the README's
deployment; floor: ``bench/_floor_app.py``'s bare relay; baseline: ours as checked out in
``--baseline DIR``, its packages first on the path), in front of the emulator (a
process of its own, never counted), sends ``--warmup`` requests, then switches
instrumentation on (``callgrind_control``) for ``--requests`` requests of a
``--tokens``-token answer, 10 at a time, straight through ASGI (no sockets between
client and app), and off again. Printed: instructions per request, and each target's
ratio (issue 26: ours ``/stream`` at most 1.5x the relay, ``/stream_events`` at most 1.3x
``/stream``).

What the count leaves out: the kernel (the sockets to the upstream, epoll) and the
HTTP server in front of the app (uvicorn's parsing and writes), the same for every case
but not nothing (``bench/bench_request_start.py`` measures them, in CPU time); what it
keeps: every Python and C instruction of the app's own work, which is where the cases
differ. Children run two at a time (the counts do not depend on what else runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FACTORIES = {"ours": ("server", ROOT), "baseline": ("server", None),
             "floor": ("_floor_app", BENCH)}
DEFAULT_CASES = "floor:stream,ours:stream,ours:stream_events"
_COLLECTED = re.compile(r"Collected : (\d+)")


async def _request(app: Callable[..., Any], path: str, body: bytes) -> bytes:
    """One POST through ``app`` as an ASGI server would send it; the response body."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client stays: the app ends the response itself
        return {"type": "http.disconnect"}

    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
             "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {}}
    await app(scope, receive, send)
    return b"".join(chunks)


async def _child(args: argparse.Namespace) -> None:
    """In the child, under callgrind: the measured requests."""
    module, path = FACTORIES[args.child]
    if args.child == "baseline":
        path = Path(args.baseline)
    # the app's directory first, before anything imports ``maritaca`` (the emulator does)
    sys.path[:0] = [str(path), str(BENCH)]
    from servers import emulator

    with emulator(reply_tokens=args.tokens, token_delay=0.0, max_records=5000) as emu:
        os.environ.update({"MARITACA_API_KEY": emu.api_key or "",
                           "MARITACA_BASE_URL": emu.base_url, "MARITACA_BACKEND": "maritaca",
                           "MARITACA_CHAINS_LOG_LEVEL": "warning",
                           "MARITACA_CHAINS_UI": "false"})
        app = __import__(module).app_factory()
        lifespan: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        started = asyncio.Event()

        async def lifespan_send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                started.set()
            elif message["type"].endswith(".failed"):
                raise SystemExit(f"the app failed to start: {message}")

        await lifespan.put({"type": "lifespan.startup"})
        life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                        "state": {}}, lifespan.get, lifespan_send))
        await started.wait()
        body = json.dumps({"input": {"topic": "Brasil"}}).encode()
        path_ = f"/story/{args.face}"
        marker = b'"on_chat_model_stream"' if args.face == "stream_events" else b"event: data"

        async def batch(count: int) -> None:
            gate = asyncio.Semaphore(10)

            async def one() -> bytes:
                async with gate:
                    return await _request(app, path_, body)

            for answer in await asyncio.gather(*(one() for _ in range(count))):
                if answer.count(marker) < args.tokens or b"event: end" not in answer:
                    raise SystemExit(f"{path_} answered {answer[-300:]!r}")

        await batch(args.warmup)
        control = ["callgrind_control", "-i"]
        # blocking on purpose: nothing runs while instrumentation switches
        subprocess.run([*control, "on", str(os.getpid())], check=True, capture_output=True)  # noqa: ASYNC221
        await batch(args.requests)
        subprocess.run([*control, "off", str(os.getpid())], check=True, capture_output=True)  # noqa: ASYNC221
        await lifespan.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(life, 10)


def _count(case: tuple[str, str], args: argparse.Namespace) -> float:
    """Instructions per request of one case (a child under callgrind)."""
    kind, face = case
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            "--callgrind-out-file=/dev/null", sys.executable, __file__, "--child", kind,
            "--face", face, "--requests", str(args.requests), "--warmup", str(args.warmup),
            "--tokens", str(args.tokens), *(["--baseline", args.baseline]
                                            if args.baseline else [])]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    found = _COLLECTED.findall(done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"{kind}:{face} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found[-1]) / args.requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--tokens", type=int, default=5, help="answer length")
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help="KIND:FACE,... (kinds: floor, ours, baseline)")
    parser.add_argument("--baseline", help="also ours from this checkout (before/after)")
    parser.add_argument("--quick", action="store_true", help="40 requests after 30")
    parser.add_argument("--child", choices=sorted(FACTORIES), help=argparse.SUPPRESS)
    parser.add_argument("--face", default="stream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop  # what uvicorn runs the server on

        uvloop.run(_child(args))
        return
    if args.quick:
        args.requests, args.warmup = 40, 30
    if shutil.which("valgrind") is None:
        if args.quick:
            print("skipped: valgrind is not installed (apt-get install valgrind)")
            return
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    cases = [tuple(item.split(":", 1)) for item in args.cases.split(",")]
    if args.baseline:
        cases += [c for c in (("baseline", "stream"), ("baseline", "stream_events"))
                  if c not in cases]
    bad = [c for c in cases if len(c) != 2 or c[0] not in FACTORIES
           or c[1] not in ("stream", "stream_events") or (c[0] == "floor" and c[1] != "stream")]
    if bad:
        raise SystemExit(f"--cases: cannot measure {bad}; e.g. {DEFAULT_CASES}")
    if any(kind == "baseline" for kind, _ in cases) and not args.baseline:
        raise SystemExit("--cases names the baseline: give its checkout with --baseline DIR")
    with ThreadPoolExecutor(2) as pool:
        counts = dict(zip(cases, pool.map(lambda c: _count(c, args), cases), strict=True))
    print(f"Instructions per request (callgrind, user space), {args.requests} requests for a "
          f"{args.tokens}-token answer, 10 at a time, in process")
    for (kind, face), count in counts.items():
        print(f"  {kind:9} /story/{face:14} {count / 1e6:8.3f} M")
    ours = counts.get(("ours", "stream"))
    if ours and ("floor", "stream") in counts:
        print(f"ours /stream against the relay: {ours / counts['floor', 'stream']:.3f}x "
              "(target at most 1.5x)")
    if ours and ("ours", "stream_events") in counts:
        print(f"ours /stream_events against /stream: {counts['ours', 'stream_events'] / ours:.3f}x "
              "(target at most 1.3x)")
    for face in ("stream", "stream_events"):
        if ("baseline", face) in counts and ("ours", face) in counts:
            print(f"ours /{face} against the baseline: "
                  f"{counts['ours', face] / counts['baseline', face]:.3f}x")


if __name__ == "__main__":
    main()
