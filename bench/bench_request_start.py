"""What starting a stream costs: server CPU per request for a short answer, ours against
the bare relay, side by side in one run, and optionally where that CPU goes (py-spy).

Run: ``.venv/bin/python bench/bench_request_start.py [--requests 400] [--concurrency 50]
[--tokens 5] [--repeat 3] [--pin] [--relay-pool N]
[--profile test-artifacts/request-start] [--baseline DIR]``

The bare relay (``bench/_floor_app.py``: uvicorn + Starlette + httpx, ``/story/stream``
only), LangServe alone on our story chain (``bench/_langserve_app.py``: ``add_routes`` on
a bare FastAPI app, none of our middleware or bookkeeping) and our server
(``server:app_factory``, the README's deployment) each run as one uvicorn worker on
127.0.0.1 in front of the emulator (in its own process). For each of floor
``/story/stream``, and ``/story/stream`` and ``/story/stream_events`` of the other two,
``--requests`` requests for a ``--tokens``-token answer, ``--concurrency`` at a time (a
new connection each), round robin over the three, ``--repeat`` rounds: server CPU (user +
system of the server process) per request, best round, and the first token's
p50/p90/p99 in that round. With a 5-token answer nearly all of a request's CPU is its
start (routing, guards, LangServe's config and input handling, callbacks, prompt, the
model's request, the upstream pool) and its end (the run's bookkeeping).
"upstream conns": the server's open connections to the emulator after its best round.
"events / answer" and "KB / answer": what the median answer of that round carried (SSE
``event:`` lines; body bytes read, chunked framing included), so that a face's CPU can
be read against how much it sends.
The relay's CPU per request grows with it: httpx's pool (httpcore) looks at every pooled
connection for every request, so a relay holding 45 connections spent 4.6 ms a request
where one holding 11 spent 1.7-1.9 (BENCHMARKS.md, issue 26, eighth pass), and which of
the two a run gets depends on how the first batches went. Read the relay's figure with
its pool size next to it. ``--relay-pool N`` caps the relay's upstream pool at N connections (requests beyond
them wait for one), which holds it near its cheapest in every round.
``--pin``: the servers on CPU 0 (``taskset``), the emulator and this client on CPU 1.
``--baseline DIR``: also ours as checked out in DIR (e.g. ``git worktree add DIR
<commit>``; its packages come first on the server's path), both faces, side by side:
before and after a change, in the same run.

``--profile PREFIX``: after the measured rounds, ``py-spy record --nonblocking`` samples
each server while it serves further batches of the same requests, writes collapsed
stacks ``PREFIX-<contender>-<face>.txt`` and prints each library's share and the
heaviest functions (as ``bench/profile_server.py`` does for paced streams).
Targets (issue 26): ours on ``/stream`` at most 1.5x the relay's CPU per request,
``/stream_events`` at most 1.3x ``/stream``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
from load import TOKEN_MARKERS, StreamResult, chain_body, sse_stream
from profile_server import summarise
from report import print_table, run_bench
from servers import LABELS, ServerProcess, emulator
from stats import percentile

CASES = (("floor", "stream"), ("langserve", "stream"), ("langserve", "stream_events"),
         ("ours", "stream"), ("ours", "stream_events"))
BASELINE = "baseline"  # --baseline: ours from another checkout


async def batch(srv: ServerProcess, face: str, requests: int, concurrency: int
                ) -> list[StreamResult]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> StreamResult:
        async with gate:
            return await sse_stream(srv.url, f"/story/{face}", chain_body(f"tema {i}"),
                                    TOKEN_MARKERS[face], limit=60)

    return await asyncio.gather(*(one(i) for i in range(requests)))


def upstream_connections(srv: ServerProcess, upstream_port: int) -> int:
    """The server's open TCP connections to the emulator: its upstream pool's size."""
    count = 0
    for proc in srv.processes():
        with contextlib.suppress(psutil.Error):
            count += sum(1 for c in proc.net_connections("tcp")
                         if c.raddr and c.raddr.port == upstream_port
                         and c.status == psutil.CONN_ESTABLISHED)
    return count


async def measure(srv: ServerProcess, face: str, args: argparse.Namespace
                  ) -> tuple[float, list[float], tuple[float, float]]:
    """(server ms of CPU per request, first-token ms of each request, the median answer's
    events and KB) for one batch."""
    before = srv.cpu()
    results = await batch(srv, face, args.requests, args.concurrency)
    await asyncio.sleep(0.1)  # the requests' last bookkeeping
    spent = srv.cpu() - before
    bad = [r for r in results if not r.ok or r.tokens < args.tokens]
    if bad:
        raise RuntimeError(f"{srv.kind} /{face}: {len(bad)} of {len(results)} requests "
                           f"failed, e.g. {bad[0]}")
    ttfts = [(r.first_token - r.started) * 1e3 for r in results if r.first_token is not None]
    size = (round(statistics.median(r.events for r in results)),
            statistics.median(r.body_bytes for r in results) / 1024)
    return spent / len(results) * 1e3, ttfts, size


async def profile(srv: ServerProcess, kind: str, face: str, args: argparse.Namespace
                  ) -> Path:
    """py-spy on the server while it serves batches of requests; the collapsed stacks."""
    assert srv.proc is not None
    pid = srv.worker_pids()[0] if srv.worker_pids() else srv.proc.pid
    out = Path(f"{args.profile}-{kind}-{face}.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
        "--nonblocking", "--rate", "500", "--duration", str(args.profile_seconds),
        "--format", "raw", "--output", str(out), stdout=subprocess.DEVNULL)
    await asyncio.sleep(0.5)  # py-spy attached
    while spy.returncode is None:
        await batch(srv, face, args.concurrency * 2, args.concurrency)
        try:
            await asyncio.wait_for(spy.wait(), 0.01)
        except TimeoutError:
            pass
    return out


async def run(args: argparse.Namespace) -> None:
    with emulator(reply_tokens=args.tokens, token_delay=0.0, max_records=5000) as emu:
        if args.pin:
            os.sched_setaffinity(0, {1})
            os.sched_setaffinity(emu.pid, {1})
        cpus = "0" if args.pin else None
        cases = chosen(CASES + (((BASELINE, "stream"), (BASELINE, "stream_events"))
                                if args.baseline else ()), args.only)
        servers = {kind: ServerProcess(
            "ours" if kind == BASELINE else kind, emu.base_url, emu.api_key or "", cpus=cpus,
            extra_env={"MARITACA_CHAINS_UI": "false",
                       **({"BENCH_APP_DIR": args.baseline} if kind == BASELINE else {}),
                       **({"BENCH_FLOOR_MAX_CONNECTIONS": str(args.relay_pool)}
                          if kind == "floor" and args.relay_pool else {})})
            for kind in dict.fromkeys(k for k, _ in cases)}
        best: dict[tuple[str, str],
                   tuple[float, list[float], int, tuple[float, float]]] = {}
        rounds: list[dict[tuple[str, str], float]] = []
        upstream_port = httpx.URL(emu.base_url).port
        profiles = []
        try:
            for srv in servers.values():
                srv.start()
            for kind, face in cases:  # warm-up: imports, pools, first-call caches
                await batch(servers[kind], face, args.concurrency * 2, args.concurrency)
            for _ in range(args.repeat):
                rounds.append({})
                for kind, face in cases:
                    emu.reset()
                    ms, ttfts, size = await measure(servers[kind], face, args)
                    rounds[-1][kind, face] = ms
                    pool = upstream_connections(servers[kind], upstream_port)
                    print(f"  {label(kind):28} /{face}: {ms:.2f} ms CPU per request, "
                          f"{pool} upstream connections", flush=True)
                    if (kind, face) not in best or ms < best[kind, face][0]:
                        best[kind, face] = ms, ttfts, pool, size
            if args.profile:
                for kind, face in cases:
                    emu.reset()
                    profiles.append(await profile(servers[kind], kind, face, args))
        finally:
            for srv in servers.values():
                srv.stop()
    print_best(best, args)
    print_paired(rounds)
    for path in profiles:
        summarise(path, args.top)


def chosen(cases: tuple[tuple[str, str], ...], only: str | None) -> tuple[tuple[str, str], ...]:
    """``cases`` narrowed to ``--only``'s ``kind[:face]`` items (all when it is not given)."""
    if not only:
        return cases
    wanted = [item.partition(":") for item in only.split(",")]
    picked = tuple(case for case in cases
                   if any(case[0] == kind and (not face or case[1] == face)
                          for kind, _, face in wanted))
    if not picked:
        raise SystemExit(f"--only {only}: no case matches; cases are "
                         + ", ".join(f"{kind}:{face}" for kind, face in cases))
    return picked


def print_best(best: dict[tuple[str, str], tuple[float, list[float], int, tuple[float, float]]],
               args: argparse.Namespace) -> None:
    """Each case's best round, and the targets' ratios between best rounds."""
    def best_ms(kind: str, face: str) -> float:
        return best.get((kind, face), (math.nan,))[0]

    floor = best_ms("floor", "stream")
    print(f"\nServer CPU per request, {args.requests} requests for a {args.tokens}-token "
          f"answer, {args.concurrency} at a time, best of {args.repeat} rounds "
          f"({'server pinned to CPU 0' if args.pin else 'no pinning'}, 1 worker)")
    print_table(["contender", "face", "ms CPU / request", "x floor", "1st token p50 ms",
                 "1st token p90 ms", "1st token p99 ms", "upstream conns", "events / answer",
                 "KB / answer"],
                [[label(kind), f"/story/{face}", ms, ms / floor, percentile(t, 50),
                  percentile(t, 90), percentile(t, 99), pool, count, kb]
                 for (kind, face), (ms, t, pool, (count, kb)) in best.items()])
    stream, events = best_ms("ours", "stream"), best_ms("ours", "stream_events")
    alone = best_ms("langserve", "stream"), best_ms("langserve", "stream_events")
    if not math.isnan(alone[0] + alone[1]):
        print(f"LangServe alone: /stream {alone[0] / floor:.2f}x floor, /stream_events "
              f"{alone[1] / alone[0]:.2f}x its /stream; ours on LangServe alone: /stream "
              f"{stream - alone[0]:+.2f} ms, /stream_events {events - alone[1]:+.2f} ms")
    if not math.isnan(stream + floor):
        print(f"target ours /stream <= 1.5x floor: {stream / floor:.2f}x "
              f"({'met' if stream / floor <= 1.5 else 'NOT met'})")
    if not math.isnan(stream + events):
        print(f"target ours /stream_events <= 1.3x /stream: {events / stream:.2f}x "
              f"({'met' if events / stream <= 1.3 else 'NOT met'})")
    if args.baseline:
        print(f"ours against the baseline ({args.baseline}): /stream "
              f"{stream / best_ms(BASELINE, 'stream'):.2f}x, /stream_events "
              f"{events / best_ms(BASELINE, 'stream_events'):.2f}x its CPU per request")


PAIRS = ((("ours", "stream"), ("floor", "stream")),
         (("ours", "stream_events"), ("ours", "stream")),
         (("ours", "stream"), (BASELINE, "stream")),
         (("ours", "stream_events"), (BASELINE, "stream_events")))


def print_paired(rounds: list[dict[tuple[str, str], float]]) -> None:
    """Each ratio the targets and a baseline ask for, taken within each round (the two
    served side by side, seconds apart) and summarised over the rounds: on a machine
    whose speed drifts between rounds, steadier than a ratio of two best rounds."""
    rows = []
    for top, bottom in PAIRS:
        ratios = sorted(one[top] / one[bottom] for one in rounds if top in one and bottom in one)
        if ratios:
            rows.append([f"{label(top[0])} /{top[1]}", f"{label(bottom[0])} /{bottom[1]}",
                         statistics.median(ratios), ratios[0], ratios[-1]])
    print(f"\nRatios within each round, over {len(rounds)} rounds")
    print_table(["this", "against", "median ratio", "lowest", "highest"], rows)


def label(kind: str) -> str:
    return f"{LABELS['ours']} baseline" if kind == BASELINE else LABELS[kind]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=5, help="answer length")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pin", action="store_true",
                        help="servers on CPU 0 (taskset); emulator and client on CPU 1")
    parser.add_argument("--relay-pool", type=int, metavar="N",
                        help="cap the relay's upstream pool at N connections")
    parser.add_argument("--profile", help="py-spy each server; collapsed stacks to PREFIX-*")
    parser.add_argument("--profile-seconds", type=int, default=8)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--baseline", help="also ours from this checkout (before/after)")
    parser.add_argument("--only", metavar="KIND[:FACE],...",
                        help="measure only these cases (kinds: floor, langserve, ours, "
                             "baseline; faces: stream, stream_events), e.g. many short "
                             "rounds of ours against a baseline")
    args = parser.parse_args()
    run_bench("request start bench", run, args)


if __name__ == "__main__":
    main()
