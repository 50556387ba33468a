"""Where a short stream's CPU goes, layer by layer, in one process (issue 26).

Run: ``.venv/bin/python bench/bench_start_layers.py [--requests 400] [--concurrency 50]``

The emulator runs in its own process (5-token answers, no delay); everything else runs
here, and each layer is measured by this process's CPU time over ``--requests`` requests,
``--concurrency`` at a time, round robin, the median of ``--repeat`` rounds:

1. raw httpx: one streaming chat completion, ``aiter_lines`` + ``orjson`` per line (what
   the bare relay does upstream), on one ``httpx.AsyncClient`` as the relay has it;
2. the same on eight clients, each request taking the one with the fewest in flight (how
   ChatMaritaca pools its connections), whose cost does not grow as one pool's does with
   the idle connections it holds;
3. ``ChatMaritaca.astream`` (the model and its callbacks, no chain);
4. the story chain's ``astream`` (prompt, model, parser: five runs);
5. the bare relay app (``bench/_floor_app.py``) through httpx's ASGI transport;
6. the same chain streamed by a minimal Starlette route, framed as LangServe's
   ``/stream`` is: what serving the chain costs at the least;
7. the same chain under LangServe alone (``add_routes`` on a bare FastAPI app);
8. our whole app (``create_app``), ``/story/stream``, through the same transport;
9. our whole app, ``/story/stream_events``;
10. and 11. our whole app with LangServe's own ``/stream`` and ``/stream_events`` handlers
   in place of ``langserve_compat.stream_route``'s (what that route saves).

The last column is what a layer adds to the one it stands on (``ON``): eight clients to
one, the model to eight clients, the chain to the model, the Starlette route and
LangServe to the chain, our app to LangServe, ``/stream_events`` to ``/stream``. The
ASGI transport replaces uvicorn's socket and HTTP parsing (the same for every app), so
rows 5-9 are the apps' own work; ``bench_request_start.py`` measures the servers as
deployed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from report import print_table, run_bench  # noqa: E402
from servers import emulator  # noqa: E402
from upstream_reads import MESSAGES, LeastBusy, read_completion  # noqa: E402

Layer = Callable[[int], Awaitable[int]]  # request number -> text chunks received
# layer -> the layer it stands on (its last column: what it adds to that one)
ON = {"raw httpx stream, 8 pools": "raw httpx stream, one pool",
      "ChatMaritaca.astream": "raw httpx stream, 8 pools",
      "story chain astream": "ChatMaritaca.astream",
      "Starlette route /stream": "story chain astream",
      "bare LangServe app /stream": "story chain astream",
      "our app /stream": "bare LangServe app /stream",
      "our app /stream_events": "our app /stream",
      "our app, LangServe's handler /stream": "our app /stream",
      "our app, LangServe's handler /stream_events": "our app /stream_events"}


def layers(base_url: str, api_key: str) -> tuple[dict[str, Layer], tuple[Any, Any]]:
    """Each layer's one request, set up for ``base_url`` (the emulator), and our two apps
    (their lifespans must be running)."""
    os.environ.update(MARITACA_API_KEY=api_key, MARITACA_BASE_URL=base_url,
                      MARITACA_BACKEND="maritaca", MARITACA_CHAINS_LOG_LEVEL="warning")
    from _floor_app import app_factory as floor_factory
    from fastapi import FastAPI
    from langchain_core.messages import HumanMessage, SystemMessage
    from langserve import add_routes
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from chains import build_chains
    from maritaca import ChatMaritaca
    from maritaca_chains import create_app, langserve_compat
    from maritaca_chains.settings import ServerSettings

    client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200))
    shards = LeastBusy([httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=25))
                        for _ in range(8)])
    model = ChatMaritaca(api_key=api_key, base_url=base_url, model="sabia-4")
    story = build_chains(model)["story"]
    messages = [SystemMessage(MESSAGES[0]["content"]), HumanMessage(MESSAGES[1]["content"])]

    async def raw(i: int) -> int:
        return await read_completion(client, base_url, api_key)

    async def raw_sharded(i: int) -> int:
        return await shards.read_completion(base_url, api_key)

    async def chat_model(i: int) -> int:
        return sum([1 async for chunk in model.astream(messages) if chunk.content])

    async def chain(i: int) -> int:
        return sum([1 async for text in story.astream({"topic": f"tema {i}"}) if text])

    def through(app: Any, path: str) -> Layer:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app, client=("127.0.0.1", 9)),
                                 base_url="http://127.0.0.1", timeout=30)

        async def one(i: int) -> int:
            response = await http.post(path, json={"input": {"topic": f"tema {i}"}})
            response.raise_for_status()
            return response.content.count(b"event: data")

        return one

    async def route(request: Request) -> StreamingResponse:
        values = orjson.loads(await request.body())["input"]

        async def events() -> AsyncIterator[bytes]:
            async for text in story.astream(values):
                yield b"event: data\r\ndata: " + orjson.dumps(text) + b"\r\n\r\n"
            yield b"event: end\r\n\r\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    langserve_alone = FastAPI()
    add_routes(langserve_alone, story, path="/story")
    ours = create_app(ServerSettings())
    own_routes = langserve_compat.add_stream_route
    langserve_compat.add_stream_route = lambda *args: False  # LangServe's handlers stay
    try:
        langserve_handled = create_app(ServerSettings())
    finally:
        langserve_compat.add_stream_route = own_routes
    return {"raw httpx stream, one pool": raw, "raw httpx stream, 8 pools": raw_sharded,
            "ChatMaritaca.astream": chat_model,
            "story chain astream": chain,
            "bare relay app /stream": through(floor_factory(), "/story/stream"),
            "Starlette route /stream": through(
                Starlette(routes=[Route("/story/stream", route, methods=["POST"])]),
                "/story/stream"),
            "bare LangServe app /stream": through(langserve_alone, "/story/stream"),
            "our app /stream": through(ours, "/story/stream"),
            "our app /stream_events": through(ours, "/story/stream_events"),
            "our app, LangServe's handler /stream": through(langserve_handled, "/story/stream"),
            "our app, LangServe's handler /stream_events": through(
                langserve_handled, "/story/stream_events")}, (ours, langserve_handled)


async def cpu_per_request(layer: Layer, requests: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> int:
        async with gate:
            return await layer(i)

    start = time.process_time()
    received = await asyncio.gather(*(one(i) for i in range(requests)))
    spent = time.process_time() - start
    if min(received) < 1:
        raise RuntimeError("a request received no text")
    return spent / requests * 1e3


async def run(args: argparse.Namespace) -> None:
    with emulator(reply_tokens=5, token_delay=0.0, max_records=5000) as emu:
        found, (app, langserve_handled) = layers(emu.base_url, emu.api_key or "")
        async with app.router.lifespan_context(app), \
                langserve_handled.router.lifespan_context(langserve_handled):
            for layer in found.values():  # warm: imports, pools, caches
                await cpu_per_request(layer, 100, args.concurrency)
            figures: dict[str, list[float]] = {name: [] for name in found}
            for _ in range(args.repeat):
                for name, layer in found.items():
                    figures[name].append(
                        await cpu_per_request(layer, args.requests, args.concurrency))
                    emu.reset()
    medians = {name: statistics.median(values) for name, values in figures.items()}
    rows = [[name, f"{ms:.2f}", f"{ms - medians[ON[name]]:+.2f} on {ON[name]}"
             if name in ON else ""] for name, ms in medians.items()]
    print(f"\nCPU per request in one process, {args.requests} requests for a 5-token answer, "
          f"{args.concurrency} at a time, median of {args.repeat} rounds")
    print_table(["layer", "ms CPU / request", "adds"], rows)
    relay, ours = medians["bare relay app /stream"], medians["our app /stream"]
    events = medians["our app /stream_events"]
    print(f"our app /stream = {ours / relay:.2f}x the bare relay app; /stream_events = "
          f"{events / ours:.2f}x /stream")
    for face in ("/stream", "/stream_events"):
        own, langserves = medians[f"our app {face}"], medians[f"our app, LangServe's handler {face}"]
        print(f"stream_route on {face}: {own - langserves:+.2f} ms, {own / langserves:.2f}x "
              "LangServe's handler in the same app")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    run_bench("start layers bench", run, parser.parse_args())


if __name__ == "__main__":
    main()
