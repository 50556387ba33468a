"""Run every benchmark in ``bench/`` in turn, small and quick, and print what each says.

Run: ``.venv/bin/python bench/run_all.py`` (``make bench``); ``--full`` runs each at its
own full-size defaults instead (tens of minutes); ``--only relay,cancel`` picks scripts
by a part of their name.

Scripts are ``bench/bench_*.py``. Each runs in its own process, one after the other
(they all want the two cores); a script that fails does not stop the others, and the
exit status says whether all passed.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# Quick arguments for scripts that take other flags than --quick.
QUICK_ARGS = {
    # two repeats: with one, a collection landing in the "framework floor" run skews it
    "bench_core_stream.py": ["--chunks", "5000", "--repeat", "2", "--ttft-trials", "40"],
    "bench_local_stack.py": ["--trials", "3", "--max-tokens", "64"],
}
TIME_LIMIT = 900  # seconds per script


def quick_args(script: Path) -> list[str]:
    if script.name in QUICK_ARGS:
        return QUICK_ARGS[script.name]
    return ["--quick"] if "--quick" in script.read_text(encoding="utf-8") else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="each script's full-size defaults")
    parser.add_argument("--only", default="", help="comma-separated parts of script names")
    args = parser.parse_args()
    scripts = sorted(BENCH.glob("bench_*.py"))
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        scripts = [s for s in scripts if any(w in s.name for w in wanted)]
    results: list[tuple[str, int, float]] = []
    for script in scripts:
        argv = [sys.executable, str(script), *([] if args.full else quick_args(script))]
        print(f"\n{'=' * 78}\n$ {' '.join(Path(a).name if a.endswith('.py') else a for a in argv)}"
              f"\n{'=' * 78}", flush=True)
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=BENCH.parent)
        try:
            code = proc.wait(None if args.full else TIME_LIMIT)
        except subprocess.TimeoutExpired:
            # SIGINT first: the script's finally blocks stop the servers it started
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            code = -1
            print(f"{script.name}: stopped after {TIME_LIMIT} s", flush=True)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
            raise
        results.append((script.name, code, time.monotonic() - started))
    print(f"\n{'=' * 78}\nsummary")
    for name, code, seconds in results:
        print(f"  {name:28} {'ok' if code == 0 else f'FAILED ({code})':12} {seconds:6.0f} s")
    sys.exit(0 if all(code == 0 for _, code, _ in results) else 1)


if __name__ == "__main__":
    main()
