"""Client faces: server CPU per relayed chunk on /v1/chat/completions (OpenAI's SSE) and
/story/ai-sdk (the AI SDK's UI message stream, written through a resumable run) beside
LangServe's /story/stream, on one server.

Run: ``.venv/bin/python bench/bench_faces.py [--quick] [--chunks 20000] [--repeat 3]
[--paced-chunks 2000] [--delay 0.002]``

One server (``uvicorn server:app_factory --factory``, the README's deployment, one worker)
in a child process on 127.0.0.1 relays the emulator (another child process); the load
client (raw asyncio sockets counting each face's per-chunk marker) is this process. Per
chunk = the server process's user + system CPU over one long stream / the emulator's
content chunks. Round robin over the faces, best of ``--repeat``. Two paces: a burst
(the emulator as fast as it can: a face that writes through a run, /ai-sdk, then relays
several chunks per write) and paced (``--delay`` seconds between chunks, as a model
streams: every face writes each chunk on its own).
Target (issue 21): each face within 1.2 x /stream's CPU per chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from load import LONG, chain_body, sse_stream
from report import print_table, run_bench
from servers import ServerProcess, emulator, emulator_cpu

from maritaca.testing import Scenario

TARGET = 1.2
MAX_TOKENS = LONG["configurable"]["max_tokens"]

# face -> (path, body, the marker each relayed chunk carries)
FACES: dict[str, tuple[str, bytes, bytes]] = {
    "/story/stream": ("/story/stream", chain_body(config=LONG), b"event: data"),
    "/v1/chat/completions": (
        "/v1/chat/completions",
        json.dumps({"model": "story", "stream": True, "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": "Brasil"}]}).encode(),
        b'"delta":{"content":'),
    "/story/ai-sdk": (
        "/story/ai-sdk",
        json.dumps({"id": "bench", "trigger": "submit-message",
                    "config": {"configurable": {"max_tokens": MAX_TOKENS}},
                    "messages": [{"id": "m", "role": "user",
                                  "parts": [{"type": "text", "text": "Brasil"}]}]}).encode(),
        b'"type":"text-delta"'),
}


async def relay_once(srv: ServerProcess, emu: object, face: str, chunks: int,
                     delay: float = 0.0) -> tuple[float, int]:
    """(server CPU seconds, emulator chunks) for one long stream on ``face``."""
    path, body, marker = FACES[face]
    emu.reset()  # type: ignore[attr-defined]
    scenario = Scenario("token_delay", delay=delay, reply_tokens=chunks) if delay \
        else Scenario.ok(reply_tokens=chunks)
    emu.enqueue(scenario)  # type: ignore[attr-defined]
    before = srv.cpu()
    result = await sse_stream(srv.url, path, body, marker, limit=600)
    await asyncio.sleep(0.05)  # the request's bookkeeping
    spent = srv.cpu() - before
    sent = sum(r.chunks_sent for r in emu.requests  # type: ignore[attr-defined]
               if r.path == "/chat/completions")
    if not result.ok or sent != chunks or result.tokens < sent:
        raise RuntimeError(f"{face}: {result}; emulator sent {sent} of {chunks}")
    return spent, sent


async def run(args: argparse.Namespace) -> None:
    with emulator(reply_tokens=5) as emu:
        srv = ServerProcess("ours", emu.base_url, emu.api_key)
        try:
            srv.start()
            for face in FACES:  # warm up: imports, pools, first-call caches
                for _ in range(3):
                    await relay_once(srv, emu, face, 200)
            emu_cpu0 = emulator_cpu(emu)
            paces = {"burst": (args.chunks, 0.0), f"paced {args.delay * 1e3:g} ms":
                     (args.paced_chunks, args.delay)}
            best: dict[tuple[str, str], float] = {}
            for _ in range(args.repeat):  # round robin: drift hits every face alike
                for pace, (chunks, delay) in paces.items():
                    for face in FACES:
                        spent, sent = await relay_once(srv, emu, face, chunks, delay)
                        key = (pace, face)
                        best[key] = min(best.get(key, float("inf")), spent / sent * 1e6)
            emu_cpu = emulator_cpu(emu) - emu_cpu0
        finally:
            srv.stop()
    print(f"\nServer CPU per relayed chunk, one server (burst: {args.chunks} chunks, paced: "
          f"{args.paced_chunks}; best of {args.repeat}; emulator CPU {emu_cpu:.2f} s not "
          f"counted)")
    rows = []
    for pace in paces:
        base = best[(pace, "/story/stream")]
        rows += [[f"{pace} {face}", best[(pace, face)], best[(pace, face)] / base]
                 for face in FACES]
    print_table(["pace, face", "µs/chunk", "x /story/stream"], rows)
    for pace in paces:
        base = best[(pace, "/story/stream")]
        for face in list(FACES)[1:]:
            ratio = best[(pace, face)] / base
            print(f"target {face} <= {TARGET} x /story/stream ({pace}): {ratio:.2f} "
                  f"({'met' if ratio <= TARGET else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3000 chunks, 1 repeat")
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--paced-chunks", type=int, default=2000)
    parser.add_argument("--delay", type=float, default=0.002,
                        help="seconds between chunks when paced")
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.paced_chunks, args.repeat = 3000, 500, 1
    run_bench("client faces bench", run, args)


if __name__ == "__main__":
    main()
