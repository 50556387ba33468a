"""What the bounded request head costs: uvicorn's httptools protocol, bare and with the
head size limit and head timeout (``maritaca_chains.connection_limits``).

Run: ``.venv/bin/python bench/bench_connection_limits.py [--requests 5000] [--repeat 5]``

Two uvicorn servers in this process (one per protocol) serve the same tiny ASGI app; one
keep-alive client sends ``--requests`` GETs with a browser-sized head (12 headers) to
each in turn, ``--repeat`` rounds, best round per protocol. The ratio is bounded/bare
wall time per request (client included, the same for both).
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from maritaca_chains.connection_limits import bounded_http_protocol

_BODY = b"ok"
_HEAD = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
         + b"".join(b"x-header-%d: %s\r\n" % (i, b"v" * 40) for i in range(10))
         + b"user-agent: bench\r\n\r\n")


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(_BODY)).encode())]})
    await send({"type": "http.response.body", "body": _BODY})


def _serve(protocol: type) -> tuple[uvicorn.Server, threading.Thread, int]:
    config = uvicorn.Config(_app, host="127.0.0.1", port=0, http=protocol, log_level="error",
                            lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, server.servers[0].sockets[0].getsockname()[1]


def _round(port: int, requests: int) -> float:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.perf_counter()
        for _ in range(requests):
            sock.sendall(_HEAD)
            data = b""
            while not data.endswith(_BODY):
                data += sock.recv(65536)
        return (time.perf_counter() - started) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    servers = {"bare httptools": _serve(HttpToolsProtocol),
               "bounded": _serve(bounded_http_protocol(32 * 1024, 10.0))}
    best = {name: float("inf") for name in servers}
    try:
        for _ in range(args.repeat):
            for name, (_, _, port) in servers.items():
                best[name] = min(best[name], _round(port, args.requests))
    finally:
        for server, thread, _ in servers.values():
            server.should_exit = True
            thread.join(10)
    for name, seconds in best.items():
        print(f"{name:>15}: {seconds * 1e6:7.1f} µs per request (best of {args.repeat})")
    print(f"{'ratio':>15}: {best['bounded'] / best['bare httptools']:.3f} (bounded / bare)")


if __name__ == "__main__":
    main()
