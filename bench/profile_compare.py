"""Where two profiles differ, in µs of CPU per request: py-spy collapsed stacks of two
servers (or two faces), each scaled by its measured CPU per request.

Run: ``.venv/bin/python bench/profile_compare.py A.txt A_MS B.txt B_MS [--top 30]``

A and B are stack files that ``bench/bench_request_start.py --profile PREFIX`` writes
(``PREFIX-<contender>-<face>.txt``); A_MS and B_MS the ms of server CPU per request the
same run printed for each. Each source file's self samples (the innermost frame's file)
as a share of its profile, times that profile's CPU per request, give µs per request;
the rows are the files whose µs differ most, B minus A. Sampling makes a file with a
handful of samples swing by tens of µs: read only the large rows.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

from profile_server import stacks
from report import print_table

_FILE = re.compile(r"\(([^:()]+):\d+\)$")  # "name (path:line)"


def per_request_us(collapsed: Path, ms: float) -> dict[str, float]:
    """µs of CPU per request spent with each source file's code innermost."""
    samples: collections.Counter[str] = collections.Counter()
    for frames, n in stacks(collapsed):
        found = _FILE.search(frames[-1])
        samples[found.group(1) if found else frames[-1]] += n
    total = sum(samples.values())
    return {name: n / total * ms * 1000 for name, n in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("a_ms", type=float)
    parser.add_argument("b", type=Path)
    parser.add_argument("b_ms", type=float)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    a, b = per_request_us(args.a, args.a_ms), per_request_us(args.b, args.b_ms)
    names = sorted(a.keys() | b.keys(), key=lambda name: b.get(name, 0) - a.get(name, 0),
                   reverse=True)
    print_table(["file (self)", f"µs {args.a.name}", f"µs {args.b.name}", "µs B - A"],
                [[name, a.get(name, 0.0), b.get(name, 0.0), b.get(name, 0.0) - a.get(name, 0.0)]
                 for name in names[:args.top]])


if __name__ == "__main__":
    main()
