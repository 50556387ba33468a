"""Server relay: CPU per relayed chunk and time to first token added, ours vs ChatOpenAI.

Run: ``.venv/bin/python bench/bench_server_relay.py [--quick] [--chunks 20000]
[--repeat 3] [--ttft-trials 200]``

Two servers side by side, each uvicorn in its own child process on 127.0.0.1 (one
worker, uvloop + httptools as uvicorn picks by default):

- ours: ``uvicorn server:app_factory --factory`` with MARITACA_API_KEY/MARITACA_BASE_URL
  pointing at the emulator (the README's deployment);
- ChatOpenAI: ``bench/_openai_app.py``, the same chains and LangServe routes with
  ``ChatOpenAI(base_url=emulator)`` as the model.

The emulator is a third process; the load client (raw asyncio sockets, counting SSE
markers) is this process. Server CPU is the server process's own user + system time
(psutil) before and after one long stream; per chunk = that / the emulator's content
chunks. Round robin over contenders and faces, best of ``--repeat``.

Time to first token: request sent -> first content event received, median of
interleaved trials, for each server and for the emulator read directly (the floor);
"added" is server minus floor. Target (issue 6): ChatOpenAI server >= 3 x ours in CPU
per chunk on /stream and /stream_events.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from load import LONG, TOKEN_MARKERS, auth_header, chain_body, chat_body, sse_stream
from report import print_table, run_bench
from servers import CONTENDERS, LABELS, ServerProcess, emulator, emulator_cpu

from maritaca.testing import Scenario

FACES = ("stream", "stream_events")


async def relay_once(srv: ServerProcess, emu: Any, face: str, chunks: int
                     ) -> tuple[float, int, int]:
    """(server CPU seconds, emulator chunks sent, client-counted events) for one long
    stream; the chunks are the emulator's own count (max_tokens may cut a reply)."""
    emu.reset()
    emu.enqueue(Scenario.ok(reply_tokens=chunks))
    before = srv.cpu()
    result = await sse_stream(srv.url, f"/story/{face}", chain_body(config=LONG),
                              TOKEN_MARKERS[face], limit=600)
    await asyncio.sleep(0.05)  # let the server finish the request's bookkeeping
    spent = srv.cpu() - before
    if not result.ok:
        raise RuntimeError(f"{srv.kind} /{face} failed: {result}")
    sent = sum(r.chunks_sent for r in emu.requests if r.path == "/chat/completions")
    if sent != chunks or result.tokens < sent:
        raise RuntimeError(f"{srv.kind} /{face}: emulator sent {sent} of {chunks} chunks, "
                           f"client saw {result.tokens} events")
    return spent, sent, result.tokens


async def first_token(url: str, path: str, body: bytes, marker: bytes,
                      headers: dict[str, str] | None = None) -> float:
    result = await sse_stream(url, path, body, marker, headers=headers, limit=30)
    if not result.ok or result.first_token is None:
        raise RuntimeError(f"{url}{path} failed: {result}")
    return (result.first_token - result.started) * 1e3


async def run(args: argparse.Namespace) -> None:
    with emulator(reply_tokens=5) as emu:
        servers = {kind: ServerProcess(kind, emu.base_url, emu.api_key) for kind in CONTENDERS}
        try:
            for srv in servers.values():
                srv.start()
            for srv in servers.values():  # warm up: imports, pools, first-call caches
                for face in FACES:
                    for _ in range(3):
                        await relay_once(srv, emu, face, 200)
            emu_cpu0 = emulator_cpu(emu)
            best: dict[tuple[str, str], float] = {}
            events: dict[tuple[str, str], int] = {}
            for _ in range(args.repeat):  # round robin: drift hits everyone alike
                for face in FACES:
                    for kind, srv in servers.items():
                        spent, n, seen = await relay_once(srv, emu, face, args.chunks)
                        key = (kind, face)
                        best[key] = min(best.get(key, float("inf")), spent / n * 1e6)
                        events[key] = seen
            emu_cpu = emulator_cpu(emu) - emu_cpu0

            print(f"\nServer CPU per relayed chunk ({args.chunks} chunks per stream, best of "
                  f"{args.repeat}; emulator CPU {emu_cpu:.2f} s not counted)")
            rows = []
            for face in FACES:
                ours, peer = best[("ours", face)], best[("chatopenai", face)]
                rows.append([f"/{face}", ours, peer, peer / ours,
                             f"{events[('ours', face)]}/{events[('chatopenai', face)]}"])
            print_table(["face", "ours µs/chunk", "ChatOpenAI µs/chunk", "ChatOpenAI/ours",
                         "events seen ours/peer"], rows)
            for face in FACES:
                ratio = best[("chatopenai", face)] / best[("ours", face)]
                print(f"target ChatOpenAI >= 3 x ours on /{face}: {ratio:.2f} "
                      f"({'met' if ratio >= 3 else 'NOT met'})")

            # ---------------------------------------------------------- first token
            direct_headers = auth_header(emu.api_key)
            samples: dict[str, list[float]] = {"direct": []}
            for kind in CONTENDERS:
                for face in FACES:
                    samples[f"{kind} /{face}"] = []
            for _ in range(args.ttft_trials):  # interleaved
                samples["direct"].append(await first_token(
                    emu.base_url, "/chat/completions", chat_body(), TOKEN_MARKERS["direct"],
                    direct_headers))
                for kind, srv in servers.items():
                    for face in FACES:
                        samples[f"{kind} /{face}"].append(await first_token(
                            srv.url, f"/story/{face}", chain_body(), TOKEN_MARKERS[face]))
            floor = statistics.median(samples["direct"])
            print(f"\nTime to first token, 5-token replies, median of {args.ttft_trials} "
                  f"interleaved trials (emulator read directly: {floor:.2f} ms)")
            rows = []
            for kind in CONTENDERS:
                for face in FACES:
                    values = samples[f"{kind} /{face}"]
                    med = statistics.median(values)
                    rows.append([f"{LABELS[kind]} /{face}", med, med - floor,
                                 sorted(values)[int(0.9 * (len(values) - 1))]])
            print_table(["server face", "median ms", "added ms", "p90 ms"], rows)
            for face in FACES:
                ours = statistics.median(samples[f"ours /{face}"])
                peer = statistics.median(samples[f"chatopenai /{face}"])
                print(f"/{face}: added first-token time ours {ours - floor:.2f} ms, "
                      f"ChatOpenAI {peer - floor:.2f} ms (ChatOpenAI/ours "
                      f"{(peer - floor) / max(ours - floor, 1e-9):.2f})")
        finally:
            for srv in servers.values():
                srv.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small run: 3000 chunks, 1 repeat, 30 first-token trials")
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ttft-trials", type=int, default=200)
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.repeat, args.ttft_trials = 3000, 1, 30
    run_bench("server relay bench", run, args)


if __name__ == "__main__":
    main()
