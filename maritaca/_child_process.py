"""Start a child process that dies with its parent, and stop it for sure.

Use for helper servers (the embedded llama.cpp backend, the emulator in a subprocess)
that must never outlive the Python process that started them, even on SIGKILL.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import IO, Any

__all__ = ["free_port", "spawn_tied", "terminate"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return preexec


def spawn_tied(argv: list[str], *, stdout: IO[Any] | int | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Popen ``argv`` so that the child is terminated if this process dies."""
    return subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent())  # noqa: PLW1509


def terminate(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaps the child."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
