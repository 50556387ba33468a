"""The embedded model through the whole stack against the same llama.cpp server direct.

Run: ``.venv/bin/python bench/bench_local_stack.py [--trials 8] [--max-tokens 128]``

Starts ``python server.py`` with no key (so it starts the embedded SmolLM2 llama.cpp
server as its child, as ``make serve`` does), reads the child's URL from ``/healthz``
and then alternates, trial by trial, on that one llama.cpp server:

- direct: httpx streaming ``/chat/completions`` with exactly the messages the story
  chain sends (temperature 0, same max_tokens)
- stack: ``RemoteRunnable(server/story).stream(...)``: LangServe client -> server ->
  chain -> ChatMaritaca -> llama.cpp

It prints tokens/s after the first token and time to first token (medians), and the
stack's share of the direct rate. Target (issue 4): >= 95 % of the rate, < 10 ms added
to the first token.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from langserve import RemoteRunnable

from chains import CHAINS
from chains.chain_runtime import render_messages
from maritaca.local import free_port

ROOT = Path(__file__).resolve().parents[1]

STORY = {"topic": "um sabiá que aprendeu a programar"}
HTTP = httpx.Client(timeout=120, trust_env=False)  # kept open, as the stack keeps its pool


def start_server(port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARITACA_")}
    proc = subprocess.Popen([sys.executable, "server.py", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False, timeout=2)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                raise SystemExit("server.py exited during start-up") from None
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server.py did not start within 120 s")


def direct(base_url: str, model: str, max_tokens: int) -> tuple[float, float, int]:
    """(time to first token, tokens/s after it, tokens) streaming llama.cpp directly."""
    story = CHAINS["story"]
    assert story.file is not None
    rendered, _ = render_messages("story", story.file, STORY, story.input_type)
    messages = [{"role": role, "content": content} for role, content in rendered]
    body = {"model": model, "messages": messages, "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    with HTTP.stream("POST", f"{base_url}/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                last = time.perf_counter()
                first = first or last
                tokens += 1
    return first - start, (tokens - 1) / (last - first), tokens


def stack(url: str, max_tokens: int) -> tuple[float, float, int]:
    """The same through RemoteRunnable -> server -> chain -> ChatMaritaca -> llama.cpp."""
    remote: RemoteRunnable[dict[str, str], str] = RemoteRunnable(f"{url}/story")
    config = {"configurable": {"temperature": 0, "max_tokens": max_tokens}}
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    for chunk in remote.stream(STORY, config=config):  # type: ignore[arg-type]
        if chunk:
            last = time.perf_counter()
            first = first or last
            tokens += 1
    return first - start, (tokens - 1) / (last - first), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port)
    try:
        health = httpx.get(f"{url}/healthz", trust_env=False).json()
        if health["backend"] != "local":
            raise SystemExit(f"expected the embedded backend, got {health}")
        base_url, model = health["base_url"], health["model"]
        stack(url, 8)  # warm both paths (model load, prompt cache, imports)
        direct(base_url, model, 8)
        rows: dict[str, list[tuple[float, float, int]]] = {"direct": [], "stack": []}
        for _ in range(args.trials):
            rows["stack"].append(stack(url, args.max_tokens))
            rows["direct"].append(direct(base_url, model, args.max_tokens))
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"embedded model ({model}) over {args.trials} alternating trials, "
          f"max_tokens={args.max_tokens}, temperature 0")
    print(f"{'path':8} {'tokens':>7} {'TTFT ms':>9} {'tok/s':>8}")
    med = {}
    for name, trials in rows.items():
        ttft = statistics.median(t[0] for t in trials) * 1e3
        rate = statistics.median(t[1] for t in trials)
        toks = statistics.median(t[2] for t in trials)
        med[name] = (ttft, rate)
        print(f"{name:8} {toks:7.0f} {ttft:9.1f} {rate:8.1f}")
    share = med["stack"][1] / med["direct"][1]
    added = med["stack"][0] - med["direct"][0]
    print(f"stack keeps {share:.1%} of the direct rate (target >= 95%); "
          f"adds {added:+.1f} ms to the first token (target < 10 ms)")


if __name__ == "__main__":
    main()
