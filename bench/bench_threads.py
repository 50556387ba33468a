"""What storing a conversation turn adds to a chat run, on SQLite (the default store).

Side by side in one process, interleaved: ``/chat/invoke`` with a ``thread_id`` (lease
taken, history read, user message and empty answer written, answer and usage written,
lease freed: three transactions) against the same call without one, on the same app and
emulator (a 20-token answer, no delay). A new thread every 10 turns, so the prompt
carries 0 to 18 earlier messages (a longer history is a longer prompt: the model's
cost, not the store's). Prints the median and p90 of each and the
difference, which is what a thread costs a run; the target is under 5 ms.

Run: ``.venv/bin/python bench/bench_threads.py [--runs 300] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

import httpx

from maritaca import ChatMaritaca
from maritaca.testing import MaritacaEmulator

TARGET_MS = 5.0


async def measure(runs: int) -> dict[str, list[float]]:
    from maritaca_chains import create_app
    from maritaca_chains.settings import ServerSettings

    folder = tempfile.mkdtemp(prefix="bench-threads-")
    settings = ServerSettings(_env_file=None, MARITACA_CHAINS_UI=False,  # type: ignore[call-arg]
                              MARITACA_CHAINS_RUN_LOG=False,
                              MARITACA_CHAINS_DATABASE_URL=f"sqlite:///{folder}/t.db")
    times: dict[str, list[float]] = {"sem thread": [], "com thread": []}
    with MaritacaEmulator(reply_tokens=20) as emu:
        model = ChatMaritaca(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
        app = create_app(settings, model=model)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench",
                                     timeout=30) as http:
            thread = (await http.post("/chat/threads", json={})).json()["thread_id"]
            bodies = {"sem thread": {"input": {"message": "Olá"}},
                      "com thread": {"input": {"message": "Olá"},
                                     "config": {"configurable": {"thread_id": thread}}}}
            for _ in range(10):  # warm up both paths
                for body in bodies.values():
                    (await http.post("/chat/invoke", json=body)).raise_for_status()
            for index in range(runs):
                if index % 10 == 0:
                    thread = (await http.post("/chat/threads", json={})).json()["thread_id"]
                    bodies["com thread"]["config"] = {"configurable": {"thread_id": thread}}
                order = list(bodies.items()) if index % 2 else list(bodies.items())[::-1]
                for label, body in order:
                    started = time.perf_counter()
                    response = await http.post("/chat/invoke", json=body)
                    times[label].append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
        await app.state.thread_store.aclose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="60 runs")
    args = parser.parse_args()
    runs = 60 if args.quick else args.runs
    times = asyncio.run(measure(runs))
    print(f"/chat/invoke, {runs} runs each, interleaved (ms; {os.cpu_count()} cores, "
          f"shared machine)")
    for label, values in times.items():
        values.sort()
        print(f"  {label:>10}: median {statistics.median(values):6.2f}  "
              f"p90 {values[int(len(values) * 0.9)]:6.2f}")
    added = statistics.median(times["com thread"]) - statistics.median(times["sem thread"])
    print(f"  storing a turn adds {added:.2f} ms to the median run "
          f"({'under' if added < TARGET_MS else 'OVER'} the {TARGET_MS:g} ms target)")


if __name__ == "__main__":
    main()
