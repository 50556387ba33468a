"""Memory: server RSS per open stream, and whether it comes back once the streams end.

Run: ``.venv/bin/python bench/bench_memory.py [--quick] [--levels 100,300]``

Each server (ours and the same app on ChatOpenAI) runs as uvicorn in its own process,
one worker. For each level N, N clients open ``POST /story/stream`` against an emulator
that sends a token every ``--token-delay`` seconds (slow streams stay open); once every
stream has its first token we read the server's RSS, its open file descriptors and its
connections to the emulator, then all clients hang up and we read them again after the
server has closed its upstream connections. RSS per stream = (RSS at N - baseline) / N.
Python rarely hands freed memory back to the OS, so "after" is judged against the peak
as well as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from load import TOKEN_MARKERS, SSEStream, chain_body, http_request
from report import print_table, run_bench
from servers import CONTENDERS, LABELS, ServerProcess, emulator

MB = 1024 * 1024


async def open_streams(srv: ServerProcess, n: int, limit: float) -> list[SSEStream]:
    loop = asyncio.get_running_loop()
    streams: list[SSEStream] = []

    async def one(i: int) -> None:
        await asyncio.sleep(i * 0.002)  # a gentle ramp
        proto = SSEStream(http_request("127.0.0.1", srv.port, "/story/stream",
                                       chain_body(f"tema {i}")), TOKEN_MARKERS["stream"])
        await loop.create_connection(lambda: proto, "127.0.0.1", srv.port)
        streams.append(proto)

    await asyncio.gather(*(one(i) for i in range(n)))
    deadline = time.monotonic() + limit
    while any(s.result.first_token is None for s in streams):
        if time.monotonic() > deadline:
            waiting = sum(s.result.first_token is None for s in streams)
            raise RuntimeError(f"{waiting}/{n} streams had no first token in {limit} s")
        await asyncio.sleep(0.1)
    return streams


async def hang_up(streams: list[SSEStream]) -> None:
    for s in streams:
        s.result.closed_at = time.monotonic()
        if s.transport is not None:
            s.transport.close()
    await asyncio.gather(*(s.done for s in streams))


async def settle(srv: ServerProcess, upstream_port: int, target: int, limit: float) -> float:
    """Seconds until the server's upstream connections fall to ``target``."""
    start = time.monotonic()
    while srv.upstream_connections(upstream_port) > target:
        if time.monotonic() - start > limit:
            break
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def run(args: argparse.Namespace) -> None:
    levels = [int(x) for x in args.levels.split(",")]
    rows = []
    verdicts: list[str] = []
    rounds: list[str] = []
    with emulator(reply_tokens=100_000, token_delay=args.token_delay) as emu:
        upstream_port = int(emu.base_url.rsplit(":", 1)[1])
        for kind in CONTENDERS:
            with ServerProcess(kind, emu.base_url, emu.api_key) as srv:
                warm = await open_streams(srv, 20, 30)  # imports, pools, first-call caches
                await hang_up(warm)
                await settle(srv, upstream_port, 0, 10)
                await asyncio.sleep(1)
                base_rss, base_fds = srv.rss(), srv.open_fds()
                base_up = srv.upstream_connections(upstream_port)
                rows.append([LABELS[kind], 0, base_rss / MB, 0.0, float("nan"), base_fds,
                             base_up, "", "", ""])
                for n in levels:
                    streams = await open_streams(srv, n, 60)
                    await asyncio.sleep(1)
                    rss, fds, up = srv.rss(), srv.open_fds(), srv.upstream_connections(upstream_port)
                    await hang_up(streams)
                    took = await settle(srv, upstream_port, base_up, 20)
                    await asyncio.sleep(2)
                    after_rss, after_fds = srv.rss(), srv.open_fds()
                    after_up = srv.upstream_connections(upstream_port)
                    per_stream_kb = (rss - base_rss) / n / 1024
                    rows.append([LABELS[kind], n, rss / MB, (rss - base_rss) / MB, per_stream_kb,
                                 fds, up, f"{after_rss / MB:.1f} ({(after_rss - base_rss) / MB:+.1f})",
                                 f"{after_fds} / {after_up}", f"{took:.1f}"])
                    returned = (after_rss - base_rss) <= 0.25 * max(rss - base_rss, 1)
                    verdicts.append(
                        f"{LABELS[kind]}, N={n}: {per_stream_kb:.0f} KB per open stream; after "
                        f"hang-up RSS {((after_rss - base_rss) / MB):+.1f} MB vs baseline "
                        f"({'back near baseline' if returned else 'NOT back near baseline'}), "
                        f"fds {after_fds - base_fds:+d}, upstream connections {after_up}")
                # a leak grows round after round; allocator high-water marks do not
                n = max(levels)
                trail = []
                for _ in range(args.rounds):
                    await hang_up(await open_streams(srv, n, 60))
                    await settle(srv, upstream_port, base_up, 20)
                    await asyncio.sleep(1)
                    trail.append((srv.rss() - base_rss) / MB)
                growth = (trail[-1] - trail[0]) / max(len(trail) - 1, 1) if trail else 0.0
                rounds.append(f"{LABELS[kind]}: RSS above baseline after each of {args.rounds} "
                              f"more rounds of {n} streams opened and hung up: "
                              f"{', '.join(f'{t:+.1f}' for t in trail)} MB "
                              f"({growth * 1024 / n:+.1f} KB per stream per round)")

    print(f"\nServer RSS with N open /story/stream streams (emulator token every "
          f"{args.token_delay:g} s; one worker)")
    print_table(["server", "N", "RSS MB", "+MB", "KB/stream", "fds", "upstream conns",
                 "RSS after hang-up MB", "fds / upstream after", "close s"], rows)
    print()
    for line in verdicts + rounds:
        print(line)
    by_kind: dict[str, float] = {}
    for row in rows:
        if row[1] == max(levels):
            by_kind[str(row[0])] = float(row[4])  # type: ignore[arg-type]
    if len(by_kind) == 2:
        ours, peer = by_kind[LABELS["ours"]], by_kind[LABELS["chatopenai"]]
        print(f"KB per stream at N={max(levels)}: ours {ours:.0f}, ChatOpenAI {peer:.0f} "
              f"(ChatOpenAI/ours {peer / ours:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="levels 50,100")
    parser.add_argument("--levels", default="100,300")
    parser.add_argument("--token-delay", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=4,
                        help="extra open/hang-up rounds at the largest level (leak check)")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.rounds = "50,100", 3
    run_bench("memory bench", run, args)


if __name__ == "__main__":
    main()
