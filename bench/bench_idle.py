"""Idle CPU: what the server spends with nobody connected, with and without the /ui chat.

Run: ``.venv/bin/python bench/bench_idle.py [--seconds 10] [--app-dir <checkout>]``
(``--app-dir``: serve another commit's checkout instead, for a before/after.)

The server (one worker, pinned to CPU 0 as in ``bench_capacity.py --pin``) starts on the
emulator, settles for 2 s, then its CPU time (user + system) is read over ``--seconds``.
Anything above zero is a timer or a poll that every relayed stream pays for too.
"""

from __future__ import annotations

import argparse
import time

import psutil
from servers import ServerProcess, emulator


def idle_cores(ui: bool, seconds: float, app_dir: str | None) -> float:
    env = {"MARITACA_CHAINS_UI": str(ui).lower(), **({"BENCH_APP_DIR": app_dir} if app_dir else {})}
    with emulator() as emu, ServerProcess("ours", emu.base_url, emu.api_key, cpus="0",
                                          extra_env=env) as srv:
        assert srv.proc is not None
        process = psutil.Process(srv.proc.pid)
        time.sleep(2)
        before = sum(process.cpu_times()[:2])
        time.sleep(seconds)
        return (sum(process.cpu_times()[:2]) - before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--app-dir", help="a checkout of another commit to serve instead")
    args = parser.parse_args()
    for ui in (True, False):
        print(f"/ui {'on ' if ui else 'off'}: {idle_cores(ui, args.seconds, args.app_dir):.3f} cores idle")


if __name__ == "__main__":
    main()
