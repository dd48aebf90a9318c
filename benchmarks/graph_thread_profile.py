"""Profile the Graph source through one full users/delta round.

    python benchmarks/graph_thread_profile.py [--users 100000] [--lines 30]

GraphSource runs its event loop (msgraph-sdk, the raw page reader and the read-ahead)
on the thread that reads the round, so cProfile on this thread sees all of it. This
drains one round against an emulator started for the purpose, and prints the round's
wall time, the process's CPU time and the functions that took the most time
(cProfile's own overhead roughly doubles it). Before session 5 the loop had a thread of
its own, which this script profiled; the name stayed.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from _common import graph_source


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--lines", type=int, default=30)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        graph_source(args.users, Path(tmp)) as (_, source),
    ):
        profile = cProfile.Profile()
        started, cpu = time.perf_counter(), time.process_time()
        profile.enable()
        users = sum(len(page.entries) for page in source.delta(None))
        profile.disable()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"{users} users in {wall:.2f} s (profiled), process CPU {cpu:.2f} s")
    pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(args.lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
