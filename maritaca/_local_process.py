"""Process plumbing for ``maritaca.local``: free ports, a child that dies with its parent,
a clean environment for it, and the tail of its log.

Nothing here knows about models or HTTP; ``maritaca.local`` builds on it.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, Any

__all__ = ["child_env", "free_port", "log_tail", "parent_death_hook", "spawn", "stop_process"]

_PR_SET_PDEATHSIG = 1

# Every setting ``python -m llama_cpp.server`` also takes from the environment: its
# pydantic ``Settings`` fields (matched case-insensitively) plus ``CONFIG_FILE``; its
# ``__main__`` even lets ``HOST`` and ``PORT`` override the command line. Pinned against
# the installed llama-cpp-python by tests/test_local_backend.py.
LLAMA_SERVER_ENV = frozenset({
    "api_key", "cache", "cache_size", "cache_type", "chat_format", "chat_template_kwargs",
    "clip_model_path", "config_file", "disable_ping_events", "draft_model",
    "draft_model_num_pred_tokens", "embedding", "flash_attn", "hf_model_repo_id",
    "hf_pretrained_model_name_or_path", "hf_tokenizer_config_path", "host",
    "interrupt_requests", "kv_overrides", "last_n_tokens_size", "logits_all", "lora_base",
    "lora_path", "main_gpu", "model", "model_alias", "mul_mat_q", "n_batch", "n_ctx",
    "n_gpu_layers", "n_threads", "n_threads_batch", "n_ubatch", "numa", "offload_kqv", "port",
    "root_path", "rope_freq_base", "rope_freq_scale", "rope_scaling_type", "rpc_servers",
    "seed", "split_mode", "ssl_certfile", "ssl_keyfile", "tensor_split", "type_k", "type_v",
    "use_mlock", "use_mmap", "verbose", "vocab_only", "yarn_attn_factor", "yarn_beta_fast",
    "yarn_beta_slow", "yarn_ext_factor", "yarn_orig_ctx",
})


def child_env() -> dict[str, str]:
    """The parent's environment minus everything the llama.cpp server would read as a setting.

    This is isolation, not configuration: the child is configured only by its command
    line. Without it a ``PORT`` or ``API_KEY`` meant for the parent (``PORT=9000 make
    serve``, a PaaS) would move the child's port or lock it behind a key.
    """
    return {k: v for k, v in os.environ.items() if k.lower() not in LLAMA_SERVER_ENV}


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago (bind to port 0, read it, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _linux_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl  # type: ignore[no-any-return]


def parent_death_hook(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``sig`` to the child when its parent dies.

    Returns None where there is no ``prctl`` (macOS, Windows): there only ``stop()`` and
    atexit clean up. The function is looked up before the fork, so the hook itself does
    no imports or loading in the forked child.
    """
    prctl = _linux_prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl
            os._exit(1)

    return hook


def spawn(args: Sequence[str], *, log: IO[bytes], name: str) -> subprocess.Popen[bytes]:
    """Start ``args`` from a dedicated thread that then waits for (and reaps) the child.

    Linux delivers the parent-death signal when the *thread* that forked the child exits,
    not the process. Forking from whichever thread called us (an anyio worker that retires
    after ten idle seconds, the thread behind ``asyncio.to_thread``) would kill the child
    some time later; this thread lives exactly as long as the child, or the process.
    The child gets its own process group, so a Ctrl-C at the terminal reaches only the
    parent, which stops the child in order (after its own requests have drained).
    """
    box: dict[str, Any] = {}
    spawned = threading.Event()

    def keeper() -> None:
        try:
            proc = subprocess.Popen(
                list(args), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=child_env(), preexec_fn=parent_death_hook(), process_group=0,
                close_fds=True,
            )
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc
            spawned.set()
            return
        box["proc"] = proc
        spawned.set()
        proc.wait()

    threading.Thread(target=keeper, name=name, daemon=True).start()
    spawned.wait()
    if "error" in box:
        raise box["error"]
    return box["proc"]  # type: ignore[no-any-return]


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Stop a child process: SIGTERM, up to ``timeout`` seconds, then SIGKILL; a child
    that is gone already is fine."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    except ProcessLookupError:  # pragma: no cover - already reaped
        pass


def log_tail(path: pathlib.Path | None, offset: int = 0, lines: int = 15) -> str:
    """The last ``lines`` lines of the child's log from byte ``offset`` on, without
    argparse's long usage text (the reason for a bad argument comes before it)."""
    if path is None:
        return ""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept: deque[str] = deque(maxlen=lines)
    for line in text.splitlines():
        if line.startswith("usage: "):
            break
        kept.append(line)
    return "\n".join(kept)
