"""CPU per streamed chunk and added time to first token: ChatMaritaca against its floors and peers.

Run: ``.venv/bin/python bench/bench_core_stream.py [--chunks 20000] [--repeat 5]``
(``BENCH_APP_DIR=<another checkout>`` adds that checkout's ChatMaritaca, e.g. the
previous main, as a contender: before/after in one run).

The emulator runs in a separate process (its CPU is not counted); each contender
streams the same long emulator response in this process and we read this process's
CPU time (``time.process_time``). Contenders, side by side in one run, round robin,
each figure the median of ``--repeat`` rounds:

- raw httpx: ``iter_lines`` + ``json.loads`` of each ``data:`` line (the wire floor)
- framework floor: a langchain-core ``BaseChatModel`` whose ``_stream`` yields
  pre-built chunks (what ``.stream()`` costs with no wire at all)
- ChatMaritaca (ours), usage on (``stream_options.include_usage``), tool-call aware,
  ``stream`` and ``astream``
- ChatOpenAI(base_url=emulator) (langchain-openai), ``stream`` and ``astream``
- langchain-maritaca 0.4.1 ChatMaritaca, ``stream`` and ``astream``
- the story chain's ``stream``/``astream`` (direct) and the same chain streamed by LCEL
- with ``BENCH_APP_DIR``: that checkout's ChatMaritaca ``stream``/``astream`` and this
  checkout's, each in a worker process of its own (which reports its own CPU time the
  same way), so that before and after run on equal terms

Targets (issue 19), sync and async: ours no dearer per chunk than langchain-maritaca
0.4.1, ChatOpenAI at least 5 x ours; (issue 2) added median time to first token vs raw
httpx < 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableLambda
from pydantic import SecretStr

from chains import build_story_chain
from maritaca import ChatMaritaca
from maritaca.testing import MaritacaEmulator

PROMPT = "Conte uma história longa sobre o Brasil."


class BuiltPerChunk(BaseChatModel):
    """A second, informative floor: builds each validated chunk as it streams, as any
    real integration must (its chunks are then allocated, and retained by the
    framework, while the clock runs)."""

    n: int = 0

    @property
    def _llm_type(self) -> str:
        return "built-per-chunk"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for i in range(self.n):
            yield ChatGenerationChunk(message=AIMessageChunk(content=f" palavra{i}"))


class PrebuiltChunks(BaseChatModel):
    """The framework floor: yields chunks built before the clock starts."""

    chunks: list[ChatGenerationChunk] = []

    @property
    def _llm_type(self) -> str:
        return "prebuilt"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        yield from self.chunks


def raw_httpx(base_url: str, key: str, model: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": True,
            "stream_options": {"include_usage": True}}
    n = 0
    with httpx.Client(timeout=60) as client, client.stream(
            "POST", f"{base_url}/chat/completions", json=body,
            headers={"Authorization": f"Bearer {key}"}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if event["choices"] and event["choices"][0]["delta"].get("content"):
                    n += 1
    return n


def count_stream(model: Any) -> int:
    return sum(1 for chunk in model.stream(PROMPT) if chunk.content)


def count_chain(chain: Any) -> int:
    return sum(1 for text in chain.stream({"topic": "Brasil"}) if text)


def lcel_twin(chain: Any) -> Any:
    """The story chain as a plain ``RunnableLambda`` (same functions): LCEL's stream."""
    direct = chain.bound
    return RunnableLambda(direct.func, afunc=direct.afunc, name=direct.name)


class Worker:
    """Another checkout's ChatMaritaca (``BENCH_APP_DIR``) in a process of its own, which
    streams on request and reports its own CPU seconds and chunk count."""

    def __init__(self, app_dir: str, base_url: str, key: str, model: str) -> None:
        env = {**os.environ, "PYTHONPATH": app_dir}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", base_url, key, model], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=app_dir)
        assert self.proc.stdout is not None
        self.where = self.proc.stdout.readline().strip()  # the maritaca package it imported

    def run(self, how: str) -> tuple[float, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(how + "\n")
        self.proc.stdin.flush()
        seconds, n = self.proc.stdout.readline().split()
        return float(seconds), int(n)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def worker(base_url: str, key: str, model_name: str) -> None:
    """``--worker``: stream on each request line ("sync" or "async") from stdin."""
    import maritaca

    model = ChatMaritaca(base_url=base_url, api_key=SecretStr(key), model=model_name,
                         max_retries=0)
    print(maritaca.__file__, flush=True)
    loop = asyncio.new_event_loop()

    async def acount() -> int:
        return sum([1 async for chunk in model.astream(PROMPT) if chunk.content])

    for line in sys.stdin:
        run = (lambda: count_stream(model)) if line.strip() == "sync" else (
            lambda: loop.run_until_complete(acount()))
        seconds, n = timed(run)()
        print(seconds, n, flush=True)


def timed(fn: Callable[[], int]) -> Callable[[], tuple[float, int]]:
    """One run of ``fn``: (CPU seconds, content chunks), after a full collection so every
    contender starts from the same heap."""

    def run() -> tuple[float, int]:
        gc.collect()
        start = time.process_time()
        n = fn()
        return time.process_time() - start, n

    return run


def first_token_ms(stream_fn: Callable[[], Iterator[Any]], trials: int) -> float:
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        it = stream_fn()
        for item in it:
            if item:
                break
        times.append((time.perf_counter() - start) * 1e3)
        close = getattr(it, "close", None)
        if close:
            close()
    return statistics.median(times)


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        worker(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ttft-trials", type=int, default=200)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    with MaritacaEmulator.subprocess(reply_tokens=args.chunks, first_delta_content="") as emu:
        assert emu.api_key is not None
        base, model = emu.base_url, "sabia-4"
        key = SecretStr(emu.api_key)
        from langchain_maritaca import ChatMaritaca as PeerMaritaca
        from langchain_openai import ChatOpenAI

        ours = ChatMaritaca(base_url=base, api_key=key, model=model, max_retries=0)
        openai_model = ChatOpenAI(base_url=base, api_key=key, model=model, max_retries=0)
        peer = PeerMaritaca(base_url=base, api_key=key, model=model)
        # the chain asks for as many tokens as the emulator has (its budget would cut them)
        chain = build_story_chain(ours).with_config(configurable={"max_tokens": args.chunks})
        lcel_chain = lcel_twin(build_story_chain(ours)).with_config(
            configurable={"max_tokens": args.chunks})
        floor, built = PrebuiltChunks(), BuiltPerChunk(n=args.chunks)
        loop = asyncio.new_event_loop()  # one loop: ChatOpenAI's async client is tied to it

        def framework_floor() -> tuple[float, int]:
            floor.chunks = [ChatGenerationChunk(message=AIMessageChunk(content=f" palavra{i}"))
                            for i in range(args.chunks)]  # built before the clock starts
            return timed(lambda: count_stream(floor))()

        def astream_count(runnable: Any, value: Any = PROMPT) -> int:
            async def run() -> int:
                return sum([1 async for chunk in runnable.astream(value)
                            if getattr(chunk, "content", chunk)])

            return loop.run_until_complete(run())

        story = {"topic": "Brasil"}
        contenders: dict[str, Callable[[], tuple[float, int]]] = {
            "raw httpx (floor)": timed(lambda: raw_httpx(base, key.get_secret_value(), model)),
            "framework floor": framework_floor,
            "floor + building chunks": timed(lambda: count_stream(built)),
            "ChatMaritaca (ours)": timed(lambda: count_stream(ours)),
            "ChatOpenAI": timed(lambda: count_stream(openai_model)),
            "langchain-maritaca 0.4.1": timed(lambda: count_stream(peer)),
            "ChatMaritaca astream": timed(lambda: astream_count(ours)),
            "ChatOpenAI astream": timed(lambda: astream_count(openai_model)),
            "langchain-maritaca astream": timed(lambda: astream_count(peer)),
            "story chain stream": timed(lambda: count_chain(chain)),
            "story chain, LCEL stream": timed(lambda: count_chain(lcel_chain)),
            "story chain astream": timed(lambda: astream_count(chain, story)),
            "story chain, LCEL astream": timed(lambda: astream_count(lcel_chain, story)),
        }
        workers: list[Worker] = []
        if app_dir := os.environ.get("BENCH_APP_DIR"):
            # both checkouts in worker processes of the same make (a smaller heap than
            # this one's, so cheaper collections): before/after on equal terms
            for label, where in (("this checkout", str(Path(__file__).parent.parent)),
                                 ("BENCH_APP_DIR", app_dir)):
                workers.append(Worker(where, base, key.get_secret_value(), model))
                print(f"{label}: ChatMaritaca from {workers[-1].where}")
                contenders[f"{label} stream"] = functools.partial(workers[-1].run, "sync")
                contenders[f"{label} astream"] = functools.partial(workers[-1].run, "async")
        per_chunk: dict[str, list[float]] = {name: [] for name in contenders}
        counts: dict[str, int] = {}
        for _ in range(args.repeat):  # round robin, so drift hits everyone alike
            for name, run in contenders.items():
                seconds, n = run()
                counts[name] = n
                per_chunk[name].append(seconds / max(n, 1))
        loop.close()
        for running in workers:
            running.close()
        results = {name: (statistics.median(per_chunk[name]) * 1e6, counts[name])
                   for name in contenders}
        us = {name: result[0] for name, result in results.items()}

        floors = us["raw httpx (floor)"] + us["framework floor"]
        print(f"\nCPU per streamed chunk ({args.chunks} chunks, median of {args.repeat})")
        print(f"{'contender':28} {'µs/chunk':>9} {'/ floors':>9} {'/ ours':>7}  chunks")
        for name, (per, n) in results.items():
            print(f"{name:28} {per:9.1f} {per / floors:9.2f} "
                  f"{per / us['ChatMaritaca (ours)']:7.2f}  {n}")
        print()
        for way, ours_name, suffix in (("sync", "ChatMaritaca (ours)", ""),
                                       ("async", "ChatMaritaca astream", " astream")):
            peer_name = "langchain-maritaca 0.4.1" if way == "sync" else "langchain-maritaca astream"
            to_peer = us[ours_name] / us[peer_name]
            to_openai = us["ChatOpenAI" + suffix] / us[ours_name]
            print(f"{way:5}: ours / langchain-maritaca 0.4.1 = {to_peer:.2f} (target <= 1: "
                  f"{'met' if to_peer <= 1 else 'NOT met'}); ChatOpenAI / ours = "
                  f"{to_openai:.2f} (target >= 5: {'met' if to_openai >= 5 else 'NOT met'})")
            if workers:
                how = "stream" if way == "sync" else "astream"
                print(f"{way:5}: this checkout / BENCH_APP_DIR (both in workers) = "
                      f"{us['this checkout ' + how] / us['BENCH_APP_DIR ' + how]:.2f}")
        print(f"story chain, direct / LCEL: sync "
              f"{us['story chain stream'] / us['story chain, LCEL stream']:.2f}, async "
              f"{us['story chain astream'] / us['story chain, LCEL astream']:.2f}")
        print(f"ours / floors: {us['ChatMaritaca (ours)'] / floors:.2f} (issue 2's target "
              f"<= 1.2: {'met' if us['ChatMaritaca (ours)'] <= 1.2 * floors else 'NOT met'})")
        wire_plus_built = us["raw httpx (floor)"] + us["floor + building chunks"]
        print(f"ours / (raw + floor that builds its chunks): "
              f"{us['ChatMaritaca (ours)'] / wire_plus_built:.2f}")

        # Diagnostic: the same three with the cyclic GC paused, to separate allocation
        # cost from collection cost (the framework keeps every chunk until the end).
        paused: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for name in ("raw httpx (floor)", "framework floor", "ChatMaritaca (ours)"):
                if name == "framework floor":
                    floor.chunks = [ChatGenerationChunk(message=AIMessageChunk(content=f" p{i}"))
                                    for i in range(args.chunks)]
                gc.collect()
                gc.disable()
                try:
                    seconds, n = contenders[name]() if name != "framework floor" else (
                        timed(lambda: count_stream(floor))())
                finally:
                    gc.enable()
                paused.setdefault(name, []).append(seconds / n * 1e6)
        raw, fw, ours_nogc = (statistics.median(times) for times in paused.values())
        print(f"GC paused: raw {raw:.1f}, framework floor {fw:.1f}, ours {ours_nogc:.1f} "
              f"µs/chunk -> ours / floors = {ours_nogc / (raw + fw):.2f}")

    with MaritacaEmulator.subprocess(reply_tokens=5, first_delta_content="") as emu:
        ours = ChatMaritaca(base_url=emu.base_url, api_key=SecretStr(emu.api_key or ""),
                            max_retries=0)
        client = httpx.Client(timeout=30)
        body = {"model": "sabia-4", "messages": [{"role": "user", "content": PROMPT}],
                "stream": True}

        def raw_first() -> Iterator[str]:
            with client.stream("POST", f"{emu.base_url}/chat/completions", json=body,
                               headers={"Authorization": f"Bearer {emu.api_key}"}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        event = json.loads(line[6:])
                        if event["choices"] and event["choices"][0]["delta"].get("content"):
                            yield event["choices"][0]["delta"]["content"]

        def ours_first() -> Iterator[str]:
            return (c.content for c in ours.stream(PROMPT))  # type: ignore[misc]

        # interleave to share any drift fairly
        raw_ms, ours_ms = [], []
        for _ in range(max(1, args.ttft_trials // 20)):
            raw_ms.append(first_token_ms(raw_first, 20))
            ours_ms.append(first_token_ms(ours_first, 20))
        raw_med, ours_med = statistics.median(raw_ms), statistics.median(ours_ms)
        print(f"\ntime to first token (median, {args.ttft_trials} trials): raw httpx "
              f"{raw_med:.3f} ms, ChatMaritaca {ours_med:.3f} ms, added {ours_med - raw_med:.3f} ms "
              f"({'met' if ours_med - raw_med < 1 else 'NOT met'}: target < 1 ms)")

        async def async_first() -> float:
            start = time.perf_counter()
            async for c in ours.astream(PROMPT):
                if c.content:
                    break
            return (time.perf_counter() - start) * 1e3

        async def async_trials() -> float:
            return statistics.median([await async_first() for _ in range(50)])

        print(f"async ChatMaritaca time to first token (median of 50): "
              f"{asyncio.run(async_trials()):.3f} ms")


if __name__ == "__main__":
    main()
