"""Where a Graph ingest's time goes on this machine: one users/delta round read alone, the
same round stored alone, and the two at once, with storing on a second thread (as cardsync
did until session 5) or in a second process (the design a storing process would give).

    python benchmarks/ingest_overlap.py [--users 100000] [--rounds 3]

The round is read through cardsync's GraphSource (msgraph-sdk request adapter, pages read
into GraphUser entries) against an emulator started for the purpose; "store" writes the
round's entries, read beforehand into memory, into a fresh state file the way a first
sync does (State.ingest in one transaction, the planning index built at the end, the WAL
checkpointed, the file closed), also into a file with SQLite's default 4 KiB pages
instead of cardsync's 16 KiB. "Together" runs a round and a store of the same size at
the same moment, so it shows what each costs the other and nothing else: the pages the
store writes are already in memory, and the storing process is forked with them, so it
pays nothing to receive them (the best case for a process). For each run it prints the
wall seconds and the CPU seconds of the Graph loop thread, of the storing thread or
process, and of the emulator, and at the end each figure's median.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import graph_source

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int, tid: int | None = None) -> float:
    """CPU seconds (user + system) of a process, or of one of its threads."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def store(pages: list[Any], path: Path, page_size: int | None = None) -> tuple[float, float]:
    """Store the round's entries into a fresh state file: (wall, CPU of this thread).
    ``page_size``: SQLite's page size for the new file instead of cardsync's."""
    from cardsync import state as state_module

    wall, cpu = time.perf_counter(), time.thread_time()
    if page_size is not None:
        with sqlite3.connect(path) as conn:
            conn.execute(f"PRAGMA page_size = {page_size}")
            conn.execute("VACUUM")  # an empty file takes the page size now
    state = state_module.open_state(path)
    with state.bulk_writes(), state.first_round("contoso"), state.transaction():
        state.ingest("contoso", (entry for page in pages for entry in page.entries), "r")
    state.close()
    return time.perf_counter() - wall, time.thread_time() - cpu


def store_in_child(pages: list[Any], path: Path, conn: Any) -> None:
    conn.send(store(pages, path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}

    def note(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    with (
        tempfile.TemporaryDirectory() as tmp,
        graph_source(args.users, Path(tmp)) as (emu, source),
    ):
        async def loop_thread_id() -> int:
            return threading.get_native_id()

        graph_tid = source._loop.run(loop_thread_id())  # noqa: SLF001
        me, emu_pid = os.getpid(), emu.proc.pid
        pages = list(source.delta(None))  # the round, in memory, for the stores
        users = sum(len(page.entries) for page in pages)
        fork = multiprocessing.get_context("fork")
        runs = 0

        def drain() -> tuple[float, float, float]:
            """Read one round: (wall, Graph thread CPU, emulator CPU)."""
            graph, served = cpu_of(me, graph_tid), cpu_of(emu_pid)
            wall = time.perf_counter()
            for _ in source.delta(None):
                pass
            return (time.perf_counter() - wall, cpu_of(me, graph_tid) - graph,
                    cpu_of(emu_pid) - served)

        print(f"{users} users, {len(pages)} pages; {os.cpu_count()} cores")
        print(f"  {'run':<34} {'wall':>7} {'Graph thr':>10} {'storing':>8} {'emulator':>9}")

        def show(name: str, wall: float, graph: float, storing: float, served: float) -> None:
            for key, value in (("wall", wall), ("graph", graph), ("storing", storing),
                               ("emulator", served)):
                if value:
                    note(f"{name}/{key}", value)
            print(f"  {name:<34} {wall:7.2f} {graph:10.2f} {storing:8.2f} {served:9.2f}",
                  flush=True)

        for _ in range(args.rounds):
            wall, graph, served = drain()
            show("read alone", wall, graph, 0.0, served)
            runs += 1
            wall, cpu = store(pages, Path(tmp) / f"s{runs}.db")
            show("store alone", wall, 0.0, cpu, 0.0)
            runs += 1
            wall, cpu = store(pages, Path(tmp) / f"s{runs}.db", page_size=4096)
            show("store alone, 4 KiB pages", wall, 0.0, cpu, 0.0)

            runs += 1
            result: list[tuple[float, float]] = []

            def store_on_thread(out: list[tuple[float, float]], path: Path) -> None:
                out.append(store(pages, path))

            thread = threading.Thread(
                target=store_on_thread, args=(result, Path(tmp) / f"s{runs}.db")
            )
            started = time.perf_counter()
            thread.start()
            _, graph, served = drain()
            thread.join()
            show("read + store, storing thread", time.perf_counter() - started, graph,
                 result[0][1], served)

            runs += 1
            ours, theirs = fork.Pipe()
            child = fork.Process(target=store_in_child,
                                 args=(pages, Path(tmp) / f"s{runs}.db", theirs))
            started = time.perf_counter()
            child.start()
            _, graph, served = drain()
            stored = ours.recv()
            child.join()
            show("read + store, storing process", time.perf_counter() - started, graph,
                 stored[1], served)

    print("medians:")
    for name, values in figures.items():
        print(f"  {name:<40} {statistics.median(values):6.2f} s")
    small = statistics.median(figures["store alone, 4 KiB pages/storing"])
    big = statistics.median(figures["store alone/storing"])
    print(f"  store alone, CPU with 4 KiB pages / with 16 KiB pages: {small / big:.2f}x")
    alone = statistics.median(figures["read alone/wall"])
    for how in ("storing thread", "storing process"):
        both = statistics.median(figures[f"read + store, {how}/wall"])
        print(f"  read + store with a {how} / read alone: {both / alone:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
