"""What run recording costs per relayed chunk: metrics + run log on vs off, side by side.

Run: ``.venv/bin/python bench/bench_overhead.py [--quick] [--chunks 20000] [--repeat 3]``

Two copies of our server (uvicorn, one worker, each in its own child process on
127.0.0.1, the emulator upstream), the same in all but what the run ledger records:

- off: ``MARITACA_CHAINS_METRICS=false`` and ``MARITACA_CHAINS_RUN_LOG=false`` (the
  ledger still follows every run, which the faces and quotas read, but records nothing);
- on: the defaults (the metrics counted at every run's end; the run's log
  line is built only when the ``maritaca_chains.runs`` logger is enabled for INFO, which
  plain uvicorn does not configure: a per-run cost anyway, not a per-chunk one).

Server CPU per relayed chunk as in ``bench_server_relay.py`` (the server process's user +
system time around one long stream / the emulator's content chunks), round robin over
the two servers and the two faces, best of ``--repeat``. Target (issue 12): "on" costs
under 5% more CPU per chunk than "off" on ``/stream`` and ``/stream_events``.

On a busy machine the two servers differ by more than that from noise alone, so the
bench also times the ledger's only per-chunk work in isolation: langchain-core
dispatching ``on_llm_new_token`` to a run's handlers, with and without the ledger
(best of 5 x 100,000 events, this process's CPU time).
"""

from __future__ import annotations

import argparse
import time
import uuid

from bench_server_relay import FACES, relay_once
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.callbacks.manager import AsyncCallbackManagerForLLMRun
from report import print_table, run_bench
from servers import ServerProcess, emulator

from maritaca_chains.ledger import RunAccounts

VARIANTS = {
    "off": {"MARITACA_CHAINS_METRICS": "false", "MARITACA_CHAINS_RUN_LOG": "false"},
    "on": {"MARITACA_CHAINS_METRICS": "true", "MARITACA_CHAINS_RUN_LOG": "true"},
}


async def run(args: argparse.Namespace) -> None:
    with emulator(reply_tokens=5) as emu:
        servers = {name: ServerProcess("ours", emu.base_url, emu.api_key or "",
                                       extra_env={**env, "MARITACA_CHAINS_UI": "false"})
                   for name, env in VARIANTS.items()}
        try:
            for srv in servers.values():
                srv.start(timeout=180)
            for srv in servers.values():  # warm up: imports, pools, first-call caches
                for face in FACES:
                    for _ in range(3):
                        await relay_once(srv, emu, face, 200)
            best: dict[tuple[str, str], float] = {}
            for _ in range(args.repeat):  # round robin: drift hits both alike
                for face in FACES:
                    for name, srv in servers.items():
                        spent, sent, _seen = await relay_once(srv, emu, face, args.chunks)
                        key = (name, face)
                        best[key] = min(best.get(key, float("inf")), spent / sent * 1e6)
        finally:
            for srv in servers.values():
                srv.stop()
    print(f"\nServer CPU per relayed chunk, run recording off vs on ({args.chunks} chunks "
          f"per stream, best of {args.repeat})")
    rows = []
    for face in FACES:
        off, on = best[("off", face)], best[("on", face)]
        rows.append([f"/{face}", off, on, f"{(on / off - 1) * 100:+.1f}%"])
    print_table(["face", "off µs/chunk", "on µs/chunk", "on vs off"], rows)
    for face in FACES:
        extra = best[("on", face)] / best[("off", face)] - 1
        print(f"target under 5% more CPU per chunk on /{face}: {extra * 100:+.1f}% "
              f"({'met' if extra < 0.05 else 'NOT met'})")
    await per_chunk_dispatch()


class _AlwaysThere(AsyncCallbackHandler):
    """Stands for another handler on the run (a caller's own callback), so that the
    comparison is of the ledger's dispatch alone."""

    run_inline = True
    ignore_llm = ignore_chat_model = ignore_retriever = ignore_agent = ignore_retry = True


async def per_chunk_dispatch(events: int = 100_000) -> None:
    accounts = RunAccounts(backend="bench", model="sabia-4", quotas=None)
    best: dict[str, float] = {}
    for _ in range(5):
        for name, extra in (("off", []), ("on", [accounts.open(None, "story")])):
            handlers = [_AlwaysThere(), *extra]
            manager = AsyncCallbackManagerForLLMRun(run_id=uuid.uuid4(), handlers=handlers,
                                                    inheritable_handlers=handlers)
            started = time.process_time()
            for _ in range(events):
                await manager.on_llm_new_token("x")
            spent = (time.process_time() - started) / events * 1e6
            best[name] = min(best.get(name, float("inf")), spent)
    print(f"\nPer-chunk event dispatch (on_llm_new_token, best of 5 x {events}): off "
          f"{best['off']:.2f} µs, on {best['on']:.2f} µs: the ledger adds "
          f"{best['on'] - best['off']:.2f} µs per chunk (the run ledger)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3000 chunks, 1 repeat")
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.chunks, args.repeat = 3000, 1
    run_bench("run recording overhead bench", run, args)


if __name__ == "__main__":
    main()
