"""How much each part of the Graph ingest could give at most: the real pull of one
users/delta round, as is and with one part made free, next to the bare listing.

    python benchmarks/ingest_bounds.py [--users 100000] [--rounds 3]

Each run is the pull step of a first sync cycle into a fresh state file, timed as
benchmarks/ingest.py times it (Graph client built, token, every page, the round stored,
the state file closed), in this process, against an emulator started for the purpose.
The parts made free (by patching cardsync's own functions, for this measurement only):

- "parse free": the Graph source sends and receives and nothing else; each page's
  entries come from a cache filled in an unmeasured round before (its links are read
  from the raw bytes, as the read-ahead already does);
- "SQLite free": the statements that write mirror rows are not run (the rows are still
  built and flattened into one list, and the round's transaction, index and checkpoint
  run over an empty table);
- "binds only": as "SQLite free", but each list is bound to a statement that reads its
  rows and writes nothing: what binding the parameters costs (Python's sqlite3 binds
  them holding the GIL, ~1.1 million for 100,000 users);
- "both free".

Runs are interleaved round by round with the bare listing (benchmarks/sync_bench.py's),
and the medians are compared with the bare listing's. A part whose "free" median is
still above 2x of the bare listing cannot bring the ingest under 2x by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import env_for, parallel_capacity, start_emulator, write_config
from sync_bench import bare_listing

MODES = ("as is", "binds only", "SQLite free", "parse free", "both free")


@contextlib.contextmanager
def parse_free(cache: dict[bytes, Any]) -> Iterator[None]:
    """GraphSource._parse answered from ``cache`` (filled on a miss)."""
    from cardsync.graph.parse import parse_delta_page_raw
    from cardsync.graph.source import GraphSource, _next_link_hint
    from cardsync.models import DeltaPage

    real = GraphSource._parse

    async def cached(self: Any, body: bytes) -> DeltaPage:
        link = _next_link_hint(body)
        if link is None:  # the round's last page: read it (it carries the deltaLink)
            return parse_delta_page_raw(body)[0]
        at = body.find(b'"id":"')
        key = body[at : at + 48]  # the page's first user id: the same in every round
        entries = cache.get(key)
        if entries is None:
            entries = cache[key] = parse_delta_page_raw(body)[0].entries
        return DeltaPage(entries, next_link=link, delta_link=None)

    GraphSource._parse = cached  # type: ignore[method-assign]
    try:
        yield
    finally:
        GraphSource._parse = real  # type: ignore[method-assign]


@contextlib.contextmanager
def _flush_replaced(write: Callable[[Any, list[Any], list[Any]], object]) -> Iterator[None]:
    """State._flush_upserts builds its rows' parameters as it does, then hands the state,
    the rows and the parameters to ``write`` instead of writing them."""
    from cardsync.state import State

    real = State._flush_upserts

    def flush(self: Any, upserts: dict[str, tuple[Any, ...]]) -> int:
        rows = list(upserts.values())
        upserts.clear()
        if rows:
            write(self, rows, [v for row in rows for v in row])
        return len(rows)

    State._flush_upserts = flush  # type: ignore[method-assign]
    try:
        yield
    finally:
        State._flush_upserts = real  # type: ignore[method-assign]


def sqlite_free() -> contextlib.AbstractContextManager[None]:
    """The mirror's rows are built and flattened, and nothing runs."""
    return _flush_replaced(lambda state, rows, params: None)


@functools.cache
def _read_only_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"SELECT count(*) FROM (VALUES {values}) WHERE 0"


def binds_only() -> contextlib.AbstractContextManager[None]:
    """The mirror's rows are bound to a statement that reads them and writes nothing."""
    return _flush_replaced(
        lambda state, rows, params: state.db.conn.execute(
            _read_only_sql(len(rows)), params
        ).fetchall()
    )


def pull(config_path: Path, state_path: Path) -> tuple[float, int]:
    """One first-round pull into a fresh state file: (seconds, users)."""
    import dataclasses

    from cardsync import service
    from cardsync.config import load
    from cardsync.state import open_state
    from cardsync.sync import OrgOutcome, Syncer

    config = load(config_path)
    config = dataclasses.replace(config, state=dataclasses.replace(config.state, path=state_path))
    org = config.organizations[0]
    backend = service.make_backend(config)
    started = time.perf_counter()
    state = open_state(state_path)
    syncer = Syncer(config, state, backend, service.graph_source)
    outcome = OrgOutcome(org.slug)
    try:
        syncer._pull(org, outcome)  # the pull step of a cycle, as benchmarks/ingest.py
    finally:
        syncer.close()
        state.close()
    return time.perf_counter() - started, outcome.pulled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # Everything a pull imports, before any clock starts (as benchmarks/ingest.py).
    import cardsync.graph.source  # noqa: F401
    import cardsync.sync  # noqa: F401

    cache: dict[bytes, Any] = {}
    figures: dict[str, list[float]] = {name: [] for name in ("bare listing", *MODES)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        emu = start_emulator(args.users, work / "emu")
        try:
            os.environ.update(env_for(emu))
            config = write_config(work, emu)
            with parse_free(cache):  # fills the cache: not measured
                pull(config, work / "fill.db")
            # The cache's 100,000 entries would otherwise be walked by every full garbage
            # collection, in every mode; a cardsync process holds no such heap.
            gc.collect()
            gc.freeze()
            print(f"{args.users} users; {os.cpu_count()} cores; {parallel_capacity()}")
            print("seconds per run:")
            print("  " + "".join(f"{name:>13}" for name in figures))
            for run in range(args.rounds):
                figures["bare listing"].append(bare_listing(emu, parse=False)[0])
                for mode in MODES:
                    with contextlib.ExitStack() as patches:
                        if mode in ("parse free", "both free"):
                            patches.enter_context(parse_free(cache))
                        if mode in ("SQLite free", "both free"):
                            patches.enter_context(sqlite_free())
                        if mode == "binds only":
                            patches.enter_context(binds_only())
                        seconds, users = pull(config, work / f"{run}-{mode}.db")
                    if users != args.users:
                        raise SystemExit(f"{mode}: pulled {users} users, not {args.users}")
                    figures[mode].append(seconds)
                    for path in work.glob(f"{run}-{mode}.db*"):
                        path.unlink()
                print("  " + "".join(f"{values[-1]:13.2f}" for values in figures.values()),
                      flush=True)
        finally:
            emu.stop()
    bare = statistics.median(figures["bare listing"])
    print("medians, and over the bare listing's:")
    for name, values in figures.items():
        print(f"  {name:<14} {statistics.median(values):6.2f} s  "
              f"{statistics.median(values) / bare:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
