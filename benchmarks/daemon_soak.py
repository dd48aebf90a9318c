"""Many daemon cycles in one process: does anything grow from one cycle to the next?

    python benchmarks/daemon_soak.py [--users 10000] [--cycles 60] [--changes 20]

Starts an emulator, makes the initial sync with `cardsync run`, then runs --cycles sync
cycles in this process the way `cardsync run --daemon` does (one Graph source per
organization kept for the daemon's life, tokens and connections included). Before every
other cycle --changes users get a new job title, so half the cycles publish cards and half
find nothing to do. Every 10 cycles it prints the cycle's wall time and result, this
process's resident memory, its open file descriptors and its threads; at the end, how
much each grew between the first and the last cycle.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import cardsync, env_for, start_emulator, write_config


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=60)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        emu = start_emulator(args.users, Path(tmp) / "emu")
        try:
            config_path = write_config(Path(tmp), emu)
            env = env_for(emu)
            initial = cardsync(config_path, "run", env=env)
            print(f"initial sync of {args.users} users: {initial.seconds:.1f} s, "
                  f"exit {initial.returncode}")
            os.environ.update(env)
            from cardsync import service
            from cardsync.config import load

            config = load(config_path)
            sources: dict[str, Any] = {}

            def cached_source(org: Any) -> Any:
                if org.slug not in sources:
                    sources[org.slug] = service.graph_source(org)
                return sources[org.slug]

            users = emu.control("GET", "/users")
            first: tuple[float, int, int] | None = None
            try:
                for cycle in range(args.cycles):
                    if cycle % 2 == 0:
                        start = (cycle * args.changes) % max(1, len(users) - args.changes)
                        for i, uid in enumerate(users[start:start + args.changes]):
                            emu.control("PATCH", f"/users/{uid}",
                                        json={"jobTitle": f"Soak {cycle} {i}"})
                    started = time.perf_counter()
                    with service.syncer(config, None, cached_source,
                                        close_sources=False) as sync:
                        results = [
                            {"result": o.result, **{k: v for k, v in o.counts().items() if v}}
                            for o in sync.cycle()
                        ]
                    seconds = time.perf_counter() - started
                    now = (rss_mb(), open_fds(), threading.active_count())
                    if first is None:
                        first = now
                    if cycle % 10 == 0 or cycle == args.cycles - 1:
                        print(f"  cycle {cycle + 1:3d}: {seconds:5.2f} s {results}  "
                              f"RSS {now[0]:6.1f} MB  fds {now[1]:3d}  threads {now[2]}",
                              flush=True)
            finally:
                for source in sources.values():
                    source.close()
        finally:
            emu.stop()
    assert first is not None
    print(f"growth from the first cycle to the last: RSS {now[0] - first[0]:+.1f} MB, "
          f"fds {now[1] - first[1]:+d}, threads {now[2] - first[2]:+d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
