"""Resumable runs: server CPU per relayed chunk against LangServe's /stream, side by side,
and the memory a kept (finished) run holds.

Run: ``.venv/bin/python bench/bench_runs.py [--quick] [--chunks 20000] [--repeat 3]
[--kept 150] [--kept-tokens 1000]``

One server (``uvicorn server:app_factory --factory``, one worker, runs in process, UI
off) in a child process on 127.0.0.1, the emulator in another, the load client here.

- CPU per chunk: the server process's user + system time around one long answer /
  the emulator's content chunks, for ``POST /story/stream`` and for a resumable run
  (``POST /story/runs`` then ``GET stream_url`` followed live to its end; the run's
  background work counted too), and for reading a finished run again from the store.
  Round robin, best of ``--repeat``, in the same process so machine noise hits all
  alike. Target (issue 13): the resumable run within 1.5 x /stream.
- Memory per kept run: on a fresh server, its RSS before and after ``--kept`` finished
  runs of ``--kept-tokens`` chunks each (kept for MARITACA_CHAINS_RUN_TTL_SECONDS),
  divided by ``--kept``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import httpx
from bench_server_relay import relay_once
from load import LONG, TOKEN_MARKERS, SSEStream, StreamResult
from report import print_table, run_bench
from servers import ServerProcess, emulator

from maritaca.testing import Scenario

MARKER = TOKEN_MARKERS["stream"]  # one "event: data" per chunk on both faces


async def follow(url: str, path: str, headers: dict[str, str] | None = None
                 ) -> StreamResult:
    """GET an SSE stream over a raw connection and count its data events to the end."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream"
               f"\r\nConnection: close\r\n{extra}\r\n").encode()
    loop = asyncio.get_running_loop()
    protocol = SSEStream(request, MARKER)
    await loop.create_connection(lambda: protocol, host, int(port))
    return await asyncio.wait_for(protocol.done, 600)


async def start_run(http: httpx.AsyncClient, tokens: int) -> dict[str, Any]:
    body = {"input": {"topic": "Brasil"}, "config": LONG}
    response = await http.post("/story/runs", content=json.dumps(body),
                               headers={"content-type": "application/json"})
    if response.status_code != 201:
        raise RuntimeError(f"POST /story/runs: {response.status_code} {response.text}")
    return dict(response.json())


async def run_once(srv: ServerProcess, emu: Any, http: httpx.AsyncClient, chunks: int
                   ) -> tuple[float, float, int]:
    """(CPU seconds live, CPU seconds reading the finished run again, chunks)."""
    emu.reset()
    emu.enqueue(Scenario.ok(reply_tokens=chunks))
    before = srv.cpu()
    run = await start_run(http, chunks)
    result = await follow(srv.url, run["stream_url"])
    await asyncio.sleep(0.05)
    live = srv.cpu() - before
    sent = sum(r.chunks_sent for r in emu.requests if r.path == "/chat/completions")
    if not result.ok or sent != chunks or result.tokens != sent:
        raise RuntimeError(f"run failed: sent {sent} of {chunks}, read {result}")
    before = srv.cpu()
    again = await follow(srv.url, run["stream_url"])
    await asyncio.sleep(0.05)
    replay = srv.cpu() - before
    if not again.ok or again.tokens != sent:
        raise RuntimeError(f"replay failed: {again}")
    return live, replay, sent


async def kept_memory(srv: ServerProcess, emu: Any, http: httpx.AsyncClient, kept: int,
                      tokens: int) -> float:
    """Bytes of RSS per finished run kept, over ``kept`` runs of ``tokens`` chunks."""
    emu.reset()
    await asyncio.sleep(0.5)
    before = srv.rss()
    for _ in range(kept):
        emu.enqueue(Scenario.ok(reply_tokens=tokens))
        run = await start_run(http, tokens)
        result = await follow(srv.url, run["stream_url"])
        if not result.ok or result.tokens != tokens:
            raise RuntimeError(f"kept run failed: {result}")
    await asyncio.sleep(0.5)
    return (srv.rss() - before) / kept


async def run(args: argparse.Namespace) -> None:
    with emulator(reply_tokens=5) as emu:
        srv = ServerProcess("ours", emu.base_url, emu.api_key or "",
                            extra_env={"MARITACA_CHAINS_UI": "false",
                                       "MARITACA_CHAINS_RUN_MAX_RUNS": str(args.kept + 50)})
        try:
            srv.start(timeout=180)
            async with httpx.AsyncClient(base_url=srv.url, timeout=600) as http:
                for _ in range(3):  # warm up: imports, pools, first-call caches
                    await relay_once(srv, emu, "stream", 200)
                    await run_once(srv, emu, http, 200)
                best = {"stream": float("inf"), "runs": float("inf"),
                        "replay": float("inf")}
                for _ in range(args.repeat):  # round robin: drift hits all alike
                    spent, sent, _ = await relay_once(srv, emu, "stream", args.chunks)
                    best["stream"] = min(best["stream"], spent / sent * 1e6)
                    live, replay, sent = await run_once(srv, emu, http, args.chunks)
                    best["runs"] = min(best["runs"], live / sent * 1e6)
                    best["replay"] = min(best["replay"], replay / sent * 1e6)
        finally:
            srv.stop()
        # a fresh server: the long answers above leave freed heap that new runs would reuse
        srv = ServerProcess("ours", emu.base_url, emu.api_key or "",
                            extra_env={"MARITACA_CHAINS_UI": "false",
                                       "MARITACA_CHAINS_RUN_MAX_RUNS": str(args.kept + 50)})
        try:
            srv.start(timeout=180)
            async with httpx.AsyncClient(base_url=srv.url, timeout=600) as http:
                for _ in range(5):
                    await run_once(srv, emu, http, args.kept_tokens)
                per_run = await kept_memory(srv, emu, http, args.kept, args.kept_tokens)
        finally:
            srv.stop()
    print(f"\nServer CPU per relayed chunk ({args.chunks} chunks per answer, best of "
          f"{args.repeat}, one server process, round robin)")
    print_table(["face", "µs/chunk", "x /stream"], [
        ["POST /story/stream (LangServe)", best["stream"], 1.0],
        ["resumable run, followed live", best["runs"], best["runs"] / best["stream"]],
        ["finished run read again", best["replay"], best["replay"] / best["stream"]],
    ])
    ratio = best["runs"] / best["stream"]
    print(f"target resumable <= 1.5 x /stream: {ratio:.2f} ({'met' if ratio <= 1.5 else 'NOT met'})")
    print(f"\nMemory per kept run ({args.kept} finished runs of {args.kept_tokens} chunks, "
          f"in process): {per_run / 1024:.1f} KiB RSS "
          f"({per_run / (args.kept_tokens + 2):.0f} bytes per event)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small run: 3000 chunks, 1 repeat, 50 kept runs")
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kept", type=int, default=150)
    parser.add_argument("--kept-tokens", type=int, default=1000)
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.repeat, args.kept = 3000, 1, 50
    run_bench("resumable runs bench", run, args)


if __name__ == "__main__":
    main()
