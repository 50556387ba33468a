"""Where a server's CPU goes while it relays many paced streams: py-spy on the server.

Run: ``.venv/bin/python bench/profile_server.py [--contender ours] [--face stream]
[--streams 200] [--seconds 10] [--out test-artifacts/profile] [--start] [--warm 10]
[--ramp 1] [--app-dir DIR]``

The server (one worker) runs under ``taskset -c 0``, the emulator and this load client
on CPU 1, as ``bench_capacity.py --pin`` does. While ``--streams`` clients read paced
30 tokens/s streams, ``py-spy record`` samples the server (``--nonblocking``: the server
is never paused, so the sampling costs it nothing) and writes collapsed stacks
(``<out>-<contender>-<face>.txt``) and a flame graph (``.svg``). The summary gives
each library's share of the samples, by the innermost frame of ours (self time) and by
any frame on the stack (inclusive time), and the heaviest functions.

``--start`` samples from the moment the streams start arriving (over ``--ramp``
seconds) instead of the steady relay, and prints the streams' first-token percentiles:
where a stream's start goes under load (issue 26). ``--warm N`` streams run first (the
server's upstream pool then holds N connections, idle once they end); ``floor`` is the
bare relay (``bench/_floor_app.py``); ``--app-dir DIR``: the server of another checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from load import TOKEN_MARKERS, chain_body, sse_stream
from report import print_table, run_bench
from servers import ServerProcess, emulator
from stats import percentile

RATE = 30.0
# A frame's library, from the path py-spy prints ("name (path:line)").
LIBRARIES = ("uvicorn", "starlette", "sse_starlette", "fastapi", "langserve",
             "langchain_core", "httpx", "httpcore", "h11", "anyio", "pydantic", "orjson",
             "maritaca_chains", "maritaca", "chains", "asyncio", "uvloop", "json", "logging",
             "gc", "contextvars", "uuid", "threading", "concurrent", "selectors")


def library(frame: str) -> str:
    path = frame[frame.find("(") + 1:frame.rfind(":")] if "(" in frame else frame
    parts = Path(path).parts
    for part in reversed(parts[:-1]):
        if part in LIBRARIES:
            return part
    name = Path(path).stem
    return name if name in LIBRARIES else ("python" if "python3" in path else "other")


def stacks(collapsed: Path) -> Iterator[tuple[list[str], int]]:
    """Each stack of a py-spy collapsed file (outermost frame first) and its samples."""
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():  # py-spy splits a frame whose name holds a newline
            yield stack.split(";"), int(count)


def summarise(collapsed: Path, top: int) -> None:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, n in stacks(collapsed):
        total += n
        self_time[library(frames[-1])] += n
        functions[frames[-1].split(" (")[0] + " [" + library(frames[-1]) + "]"] += n
        for lib in {library(f) for f in frames}:
            inclusive[lib] += n
    print(f"\n{total} samples in {collapsed}")
    print_table(["library", "self %", "inclusive %"],
                [[lib, 100 * n / total, 100 * inclusive[lib] / total]
                 for lib, n in self_time.most_common()])
    print()
    print_table(["heaviest functions (self)", "%"],
                [[name, 100 * n / total] for name, n in functions.most_common(top)])


async def run(args: argparse.Namespace) -> None:
    tokens = int(args.seconds * RATE)
    out = Path(f"{args.out}-{args.contender}-{args.face}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with emulator(reply_tokens=tokens, token_delay=1 / RATE, max_records=5000) as emu:
        os.sched_setaffinity(0, {1})
        os.sched_setaffinity(emu.pid, {1})
        env = {"BENCH_APP_DIR": args.app_dir} if args.app_dir else None
        with ServerProcess(args.contender, emu.base_url, emu.api_key, cpus="0",
                           extra_env=env) as srv:
            rng = random.Random(0)

            async def client(i: int, ramp: float) -> Any:
                await asyncio.sleep(rng.uniform(0, ramp))
                return await sse_stream(srv.url, f"/story/{args.face}", chain_body(f"tema {i}"),
                                        TOKEN_MARKERS[args.face], limit=tokens / RATE * 4 + 60)

            await asyncio.gather(*(client(i, 0.5) for i in range(args.warm)))  # warm-up
            emu.reset()
            streams = asyncio.gather(*(client(i, args.ramp) for i in range(args.streams)))
            # --start: sample the streams' start; else once every stream started
            await asyncio.sleep(0.0 if args.start else args.ramp + 1.0)
            assert srv.proc is not None
            seconds = args.ramp + 4 if args.start else args.seconds - 4
            spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(srv.proc.pid),
                   "--nonblocking", "--rate", "250", "--duration", str(int(seconds))]
            procs = [await asyncio.create_subprocess_exec(
                *spy, "--format", fmt, "--output", str(out.with_suffix(ext)),
                stdout=subprocess.DEVNULL)
                for fmt, ext in (("raw", ".txt"), ("flamegraph", ".svg"))]
            for proc in procs:
                await proc.wait()
            results = await streams
            ok = sum(1 for r in results if r.ok)
            ttfts = [(r.first_token - r.started) * 1e3 for r in results
                     if r.first_token is not None]
            print(f"{args.contender} /story/{args.face}: {ok}/{args.streams} streams ok; "
                  f"first token p50/p90/p99 {percentile(ttfts, 50):.0f}/"
                  f"{percentile(ttfts, 90):.0f}/{percentile(ttfts, 99):.0f} ms")
    summarise(out.with_suffix(".txt"), args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contender", default="ours", choices=("ours", "chatopenai", "floor"))
    parser.add_argument("--face", default="stream", choices=("stream", "stream_events"))
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each stream")
    parser.add_argument("--out", default="test-artifacts/profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--start", action="store_true",
                        help="sample the streams' start (and print first-token percentiles)")
    parser.add_argument("--warm", type=int, default=10, help="streams run before")
    parser.add_argument("--ramp", type=float, default=1.0,
                        help="seconds over which the streams start")
    parser.add_argument("--app-dir", help="the server of this checkout (BENCH_APP_DIR)")
    args = parser.parse_args()
    run_bench("profile", run, args)


if __name__ == "__main__":
    main()
