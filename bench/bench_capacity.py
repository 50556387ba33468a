"""Capacity: the most concurrent 30 tokens/s streams a server holds, and its CPU per chunk.

Run: ``.venv/bin/python bench/bench_capacity.py [--quick] [--pin] [--levels 100,200,400]
[--seconds 10] [--workers 2] [--contenders direct,floor,ours,chatopenai]``

A contender may carry settings for its server: ``ours@MARITACA_CHAINS_FULL_GC_SECONDS=0``
is ours with that variable set (to compare settings side by side in one run).

Each server is deployed as the README says, ``uvicorn server:app_factory --factory``
(ours, with MARITACA_API_KEY + MARITACA_BASE_URL pointing at the emulator), and the peer
the same way with ``bench/_openai_app.py`` (the same app on ``ChatOpenAI(base_url=
emulator)``). The emulator, in its own process on uvloop, streams every answer at 30
tokens/s (``token_delay=1/30``; it batches tokens that are due when it falls behind, so
it degrades by merging chunks, never by queueing).

``--pin``: one worker, the server under ``taskset -c 0``, the emulator and the load
client on CPU 1, so the server has exactly one core. Nothing keeps other processes (a test
run, another bench) off CPU 0: a level where they took over 5% of it is flagged, since
it measured a shared core. Without ``--pin``, ``--workers`` (default 2) and no pinning.

At each level N, N clients (raw asyncio sockets in this process, on uvloop) start over
``--ramp`` seconds and read ``POST /story/stream`` to its end; a level passes when every
stream delivers all its tokens and the 99th percentile of the inter-chunk gaps, pooled
over all streams, is under 33 ms + ``--budget-ms`` (100 ms); "steady p99" (shown, not
judged) leaves out the gaps before every stream has started, when request start-up work
competes with the running streams. Every level and every paced CPU run also reports
the first token's p50/p90/p99 (from a client's connect to its first token chunk): what
the start of a stream costs under load (issue 26). The "emulator direct" row reads the emulator with no
server in between: the ceiling set by the emulator and the client on this machine. The
"bare relay (floor)" (``floor``, ``bench/_floor_app.py``) is uvicorn + Starlette + httpx
relaying the same upstream as LangServe-shaped ``/story/stream`` SSE and nothing else:
the least this stack costs, so the run shows how far a server is from it. It has no
``/story/stream_events`` (it would be the same relay): its rows there are left out.

CPU per chunk (server CPU time / relayed model chunks) in two regimes, on
``/story/stream`` and ``/story/stream_events``: paced (``--cpu-streams`` concurrent 30
tokens/s streams: every chunk is its own trip through the event loop) and burst (one
unpaced stream of ``--burst-chunks``: reads and writes batch up); "x floor" divides by
the floor's /stream figure in the same run, when the floor ran. ``--cpu-only`` skips
the levels. Targets (issue 15): ours >= 500 streams pinned and >= 3 x ChatOpenAI; paced
CPU per chunk <= 60 µs on /stream, <= 100 µs on /stream_events.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import psutil
from load import LONG, TOKEN_MARKERS, StreamResult, auth_header, chain_body, chat_body, sse_stream
from report import print_table, run_bench
from servers import LABELS as KIND_LABELS
from servers import ServerProcess, emulator, emulator_cpu
from stats import percentile

from maritaca.testing import Scenario

RATE = 30.0  # tokens per second per stream
NOMINAL_MS = 1000 / RATE
FACES = ("stream", "stream_events")
FLOOR = "floor"  # the bare relay: /story/stream only


def has_face(contender: str, face: str) -> bool:
    return face == "stream" or contender.partition("@")[0] != FLOOR
SERVER_CPU, OTHERS_CPU = "0", 1  # --pin: the server's core, and everyone else's


class Labels(dict[str, str]):
    """Contender -> label: ``ours@VAR=value`` is ours's label and the setting."""

    def __missing__(self, contender: str) -> str:
        kind, _, setting = contender.partition("@")
        return f"{KIND_LABELS[kind]} {setting.removeprefix('MARITACA_CHAINS_')}".strip()


LABELS = Labels()


def core_busy(cpu: int) -> float:
    """CPU seconds core ``cpu`` has spent busy (anyone's), since boot."""
    times = psutil.cpu_times(percpu=True)[cpu]
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def server_for(contender: str, emu: Any, args: argparse.Namespace) -> ServerProcess:
    kind, _, setting = contender.partition("@")
    name, _, value = setting.partition("=")
    return ServerProcess(kind, emu.base_url, emu.api_key, workers=args.workers,
                         extra_env={name: value} if name else None,
                         cpus=SERVER_CPU if args.pin else None)


@dataclass
class Level:
    contender: str
    n: int
    ok: int
    p50_ms: float
    p99_ms: float
    steady_p99_ms: float
    max_ms: float
    ttft_ms: tuple[float, float, float]  # first token p50, p90, p99, from the request's start
    duration_s: float
    server_cores: float
    server_us_per_chunk: float
    worker_split: str
    emulator_cores: float
    client_cores: float
    failures: str
    intruders: float = float("nan")  # --pin: other processes' share of the server's core

    def passed(self, budget_ms: float) -> bool:
        return self.ok == self.n and self.p99_ms < NOMINAL_MS + budget_ms


async def one_level(contender: str, n: int, target: ServerProcess | None, emu: Any,
                    tokens: int, ramp: float, face: str = "stream") -> Level:
    rng = random.Random(n)
    if target is None:
        url, path, face = emu.base_url, "/chat/completions", "direct"
        headers = auth_header(emu.api_key)
    else:
        url, path, headers = target.url, f"/story/{face}", {}
    limit = tokens / RATE * 4 + 60

    async def client(i: int) -> StreamResult:
        await asyncio.sleep(rng.uniform(0, ramp))
        body = chat_body(f"Conte a história {i}.") if target is None else chain_body(f"tema {i}")
        return await sse_stream(url, path, body, TOKEN_MARKERS[face], headers=headers,
                                record_gaps=True, limit=limit)

    me = psutil.Process()
    busy0 = core_busy(int(SERVER_CPU))
    cpu0 = (target.cpu() if target else 0.0, emulator_cpu(emu), sum(me.cpu_times()[:2]))
    workers0 = target.worker_cpu() if target else []
    wall0 = time.monotonic()
    results = await asyncio.gather(*(client(i) for i in range(n)))
    wall = time.monotonic() - wall0
    cpu1 = (target.cpu() if target else 0.0, emulator_cpu(emu), sum(me.cpu_times()[:2]))
    cores = [(b - a) / wall for a, b in zip(cpu0, cpu1, strict=True)]
    intruders = max(0.0, (core_busy(int(SERVER_CPU)) - busy0) / wall - cores[0])
    workers = [b - a for a, b in zip(workers0, target.worker_cpu() if target else [],
                                     strict=False)]
    split = "/".join(f"{w / max(sum(workers), 1e-9):.0%}" for w in workers) or "-"
    relayed = sum(r.tokens for r in results)
    good = [r for r in results if r.ok and r.tokens == tokens]
    gaps = [g * 1e3 for r in results for g in r.gaps]
    # once every stream has started (the ramp, plus a second): no start-up work left
    steady_from = wall0 + ramp + 1.0
    steady = [g * 1e3 for r in results for g, at in zip(r.gaps, r.gap_at, strict=True)
              if at >= steady_from]
    ttfts = [(r.first_token - r.started) * 1e3 for r in results if r.first_token is not None]
    durations = [r.last_token - r.started for r in good if r.last_token is not None]
    reasons: dict[str, int] = {}
    for r in results:
        if not (r.ok and r.tokens == tokens):
            why = r.failure or (f"HTTP {r.status}" if r.status != 200 else
                                "error event" if r.error else f"{r.tokens}/{tokens} tokens")
            reasons[why.split(":")[0]] = reasons.get(why.split(":")[0], 0) + 1
    return Level(contender, n, len(good), percentile(gaps, 50), percentile(gaps, 99),
                 percentile(steady, 99),
                 max(gaps, default=float("nan")),
                 (percentile(ttfts, 50), percentile(ttfts, 90), percentile(ttfts, 99)),
                 statistics.mean(durations) if durations else float("nan"),
                 cores[0], (cpu1[0] - cpu0[0]) / max(relayed, 1) * 1e6, split,
                 cores[1], cores[2],
                 ", ".join(f"{k} x{v}" for k, v in reasons.items()), intruders)


def plot(results: list[Level], budget_ms: float, setup: str, path: str) -> None:
    """p99 gap between chunks against concurrent streams, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for kind in dict.fromkeys(r.contender for r in results):
        rows = [r for r in results if r.contender == kind]
        ax.plot([r.n for r in rows], [r.p99_ms for r in rows], marker="o", label=LABELS[kind])
    ax.axhline(NOMINAL_MS + budget_ms, color="grey", linestyle="--",
               label=f"budget: {NOMINAL_MS:.0f} + {budget_ms:.0f} ms")
    ax.set_xlabel(f"concurrent streams at 30 tokens/s ({setup})")
    ax.set_ylabel("p99 gap between chunks (ms)")
    ax.set_title("How many streams a server holds")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")


async def burst_cpu(srv: ServerProcess, emu: Any, face: str, chunks: int) -> float:
    """Server µs of CPU per chunk relaying one unpaced stream of ``chunks`` chunks."""
    emu.reset()
    emu.enqueue(dataclasses.replace(Scenario.token_delay(0.0), reply_tokens=chunks))
    before = srv.cpu()
    result = await sse_stream(srv.url, f"/story/{face}", chain_body(config=LONG),
                              TOKEN_MARKERS[face], limit=600)
    await asyncio.sleep(0.05)  # the request's last bookkeeping
    spent = srv.cpu() - before
    sent = sum(r.chunks_sent for r in emu.requests if r.path == "/chat/completions")
    if not result.ok or sent != chunks:
        raise RuntimeError(f"{srv.kind} /{face} burst: {sent}/{chunks} chunks, {result}")
    return spent / sent * 1e6


async def cpu_per_chunk(servers: dict[str, ServerProcess | None], emu: Any,
                        args: argparse.Namespace, tokens: int) -> None:
    """Both regimes, both faces, contenders round robin."""
    rows = []
    for face in FACES:
        for kind, srv in servers.items():
            if srv is None or not has_face(kind, face):
                continue
            emu.reset()
            paced = await one_level(kind, args.cpu_streams, srv, emu, tokens, args.ramp, face)
            burst = min([await burst_cpu(srv, emu, face, args.burst_chunks) for _ in range(2)])
            rows.append([LABELS[kind], f"/story/{face}", paced.server_us_per_chunk,
                         paced.server_cores, paced.p99_ms, burst, *paced.ttft_ms])
            print(f"  {LABELS[kind]:28} /{face}: paced {paced.server_us_per_chunk:.0f} µs/chunk "
                  f"({args.cpu_streams} streams, {paced.server_cores:.2f} cores, gap p99 "
                  f"{paced.p99_ms:.0f} ms, first token {ttft_text(paced)}"
                  f"{intruders(paced, args)}), burst {burst:.0f} µs/chunk", flush=True)
    print(f"\nServer CPU per relayed chunk: paced = {args.cpu_streams} concurrent 30 tokens/s "
          f"streams; burst = one unpaced stream of {args.burst_chunks} chunks (best of 2)")
    headers = ["contender", "face", "paced µs/chunk", "paced cores", "paced gap p99 ms",
               "burst µs/chunk", *TTFT_HEADERS]
    floor = next((r for r in rows if r[0] == LABELS[FLOOR]), None)
    if floor is not None:
        print(f"x floor: µs/chunk / the {LABELS[FLOOR]}'s on /story/stream (it has no "
              f"/story/stream_events: the same relay would serve both faces)")
        headers[4:] = ["paced gap p99 ms", "paced x floor", "burst µs/chunk", "burst x floor",
                       *TTFT_HEADERS]
        rows = [[*r[:5], r[2] / floor[2], r[5], r[5] / floor[5], *r[6:]] for r in rows]
    print_table(headers, rows)


TTFT_HEADERS = ["1st token p50 ms", "1st token p90 ms", "1st token p99 ms"]


def ttft_text(level: Level) -> str:
    """First-token percentiles: from a request's start to its first token chunk."""
    p50, p90, p99 = level.ttft_ms
    return f"p50/p90/p99 {p50:.0f}/{p90:.0f}/{p99:.0f} ms"


def intruders(level: Level, args: argparse.Namespace) -> str:
    """``--pin`` promises the server a core of its own, but nothing keeps other processes
    off it (another bench, a test run): say when they took a noticeable share."""
    if not args.pin or not level.intruders > 0.05:
        return ""
    return f" [other processes used {level.intruders:.2f} of the server's core]"


def pin_others(emu: Any) -> None:
    """The emulator and this process (the load client) on the core the server leaves."""
    os.sched_setaffinity(0, {OTHERS_CPU})
    os.sched_setaffinity(emu.pid, {OTHERS_CPU})
    for child in psutil.Process(emu.pid).children(recursive=True):
        os.sched_setaffinity(child.pid, {OTHERS_CPU})


async def run(args: argparse.Namespace) -> None:
    tokens = int(args.seconds * RATE)
    levels = [int(x) for x in args.levels.split(",")] if not args.cpu_only else []
    contenders = args.contenders.split(",")
    setup = ("1 worker pinned to 1 core" if args.pin
             else f"{args.workers} worker{'s' * (args.workers > 1)}, no pinning")
    with emulator(reply_tokens=tokens, token_delay=1 / RATE, max_records=5000) as emu:
        if args.pin:
            pin_others(emu)
        servers: dict[str, ServerProcess | None] = {}
        try:
            for kind in contenders:
                if kind == "direct":
                    servers[kind] = None
                    continue
                srv = server_for(kind, emu, args)
                servers[kind] = srv
                srv.start()
                for face in FACES:  # warm-up
                    if has_face(kind, face):
                        await one_level(kind, 10, srv, emu, 20, 0.2, face)
            if args.cpu_streams:
                await cpu_per_chunk(servers, emu, args, tokens)
            results: list[Level] = []
            alive = set(contenders)
            for n in levels:
                for kind in contenders:  # round robin per level
                    if kind not in alive:
                        continue
                    emu.reset()
                    level = await one_level(kind, n, servers[kind], emu, tokens, args.ramp)
                    results.append(level)
                    print(f"  {LABELS[kind]:28} N={n:5d}: {level.ok}/{n} ok, gap p99 "
                          f"{level.p99_ms:7.1f} ms (steady {level.steady_p99_ms:6.1f}), max "
                          f"{level.max_ms:7.1f} ms, first token {ttft_text(level)}, server "
                          f"{level.server_cores:.2f} cores ({level.worker_split}, "
                          f"{level.server_us_per_chunk:.0f} µs/chunk), emulator "
                          f"{level.emulator_cores:.2f}, client {level.client_cores:.2f} "
                          f"{'PASS' if level.passed(args.budget_ms) else 'FAIL'} "
                          f"{level.failures}{intruders(level, args)}", flush=True)
                    if not level.passed(args.budget_ms) and not args.keep_going:
                        alive.discard(kind)
                    await asyncio.sleep(1)  # let the sockets drain between levels
                if not alive:
                    break
        finally:
            for server in servers.values():
                if server is not None:
                    server.stop()
    if results:
        report(results, contenders, args, tokens, setup)


def report(results: list[Level], contenders: list[str], args: argparse.Namespace,
           tokens: int, setup: str) -> None:
    print(f"\nCapacity at {RATE:.0f} tokens/s per stream, {args.seconds:g} s streams "
          f"({tokens} tokens), {setup}, pass = all tokens and inter-chunk gap "
          f"p99 < {NOMINAL_MS:.0f} + {args.budget_ms:.0f} ms")
    print_table(["contender", "N", "ok", "gap p50 ms", "gap p99 ms", "steady p99 ms",
                 "gap max ms", *TTFT_HEADERS, "mean stream s", "server cores",
                 "server µs/chunk", "emulator cores", "client cores", "verdict"],
                [[LABELS[r.contender], r.n, r.ok, r.p50_ms, r.p99_ms, r.steady_p99_ms, r.max_ms,
                  *r.ttft_ms, r.duration_s, r.server_cores,
                  r.server_us_per_chunk if r.contender != "direct" else float("nan"),
                  r.emulator_cores, r.client_cores,
                  "pass" if r.passed(args.budget_ms) else "FAIL"] for r in results])
    best = {kind: max((r.n for r in results if r.contender == kind
                       and r.passed(args.budget_ms)), default=0) for kind in contenders}
    print()
    shared = [r for r in results if intruders(r, args)]
    if shared:
        print(f"warning: other processes ran on the server's core during {len(shared)} of "
              f"{len(results)} levels (up to {max(r.intruders for r in shared):.2f} of it): "
              f"those levels measure a shared core, not the server alone")
    for kind in contenders:
        tested = [r.n for r in results if r.contender == kind]
        print(f"largest passing level, {LABELS[kind]}: {best[kind]} "
              f"(tested {', '.join(map(str, tested))})")
    if "ours" in best and "chatopenai" in best:
        ratio = best["ours"] / best["chatopenai"] if best["chatopenai"] else float("inf")
        print(f"target ours >= 500: {'met' if best['ours'] >= 500 else 'NOT met'} "
              f"({best['ours']}); ours >= 3 x ChatOpenAI: "
              f"{'met' if ratio >= 3 else 'NOT met'} ({ratio:.2f}x)")
    if "ours" in best and best.get(FLOOR):
        print(f"ours holds {best['ours'] / best[FLOOR]:.0%} of the floor's level "
              f"({best['ours']} of {best[FLOOR]}; a level is only as fine as --levels)")
    if args.plot:
        plot(results, args.budget_ms, setup, args.plot)
    if "direct" in best and best.get("ours", 0) and best["direct"] <= best["ours"]:
        print("note: the emulator read directly did no better than through our server: "
              "the emulator/client ceiling, not the server, may be what limits here")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small run: levels 50,100,200, 4 s streams, 50 CPU streams")
    parser.add_argument("--pin", action="store_true",
                        help="1 worker on CPU 0 (taskset); emulator and client on CPU 1")
    parser.add_argument("--levels", default="50,100,150,200,300,400,500,600,800,1000")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each stream")
    parser.add_argument("--ramp", type=float, default=2.0,
                        help="seconds over which a level's streams start")
    parser.add_argument("--workers", type=int, default=2, help="without --pin")
    parser.add_argument("--budget-ms", type=float, default=100.0)
    parser.add_argument("--contenders", default="direct,ours,chatopenai",
                        help="of direct, floor, ours, chatopenai (ours@VAR=value: with a "
                             "setting)")
    parser.add_argument("--cpu-streams", type=int, default=100,
                        help="streams in the paced CPU-per-chunk run (0: skip it)")
    parser.add_argument("--burst-chunks", type=int, default=5000)
    parser.add_argument("--cpu-only", action="store_true", help="CPU per chunk, no levels")
    parser.add_argument("--plot", help="write a PNG of p99 gap against streams here")
    parser.add_argument("--keep-going", action="store_true",
                        help="test every level, also past a contender's first failure")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.seconds, args.ramp = "50,100,200", 4.0, 1.0
        args.cpu_streams, args.burst_chunks = 50, 2000
    if args.pin:
        args.workers = 1
    run_bench("capacity bench", run, args)


if __name__ == "__main__":
    main()
