"""The benchmarks run, on small tenants, and print the lines docs/performance.md quotes; the
parts ingest_bounds.py makes free are really free, and put back afterwards. No timing is
asserted (tests/ holds no timing test)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cardsync.graph.parse import parse_delta_page_raw
from cardsync.state import State, open_state

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
DELTA = "https://graph.microsoft.com/v1.0/users/delta?$deltatoken=x"


def run_benchmark(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True, text=True, timeout=300, cwd=BENCHMARKS,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_sync_bench_listing_prints_the_ingest_and_its_ratios() -> None:
    out = run_benchmark(
        "sync_bench.py", "--users", "1000", "--small", "200", "--listing-only",
        "--listing-rounds", "3",
    )
    assert re.search(r"the second core gives \d+% of the first", out)
    for label in (
        "bare listing (httpx, best of 3)",
        "bare listing + json.loads (best of 3)",
        "cardsync Graph source: list, parse (best of 3)",
        "cardsync ingest: list, parse, store (best of 3)",
    ):
        assert re.search(re.escape(label) + r"\s+\d+\.\d\d s", out), label
    assert "1000 users, client" in out  # the ingest stored every user
    assert len(re.findall(r"round \d: bare listing \d+\.\d\d s", out)) == 3
    for ratio in ("ingest / bare listing", "ingest / bare listing, median of rounds"):
        assert re.search(re.escape(ratio) + r"\s+\d+\.\d\d x", out), ratio


def test_ingest_bounds_prints_every_mode() -> None:
    out = run_benchmark("ingest_bounds.py", "--users", "600", "--rounds", "1")
    for mode in ("bare listing", "as is", "binds only", "SQLite free", "parse free", "both free"):
        assert re.search(rf"\n  {re.escape(mode)}\s+\d+\.\d\d s\s+\d+\.\d\dx", out), mode


# Every other benchmark, on a tenant small enough for seconds: it runs to the end and
# prints its last figures (a line that only the end of the run prints).
SMALL_RUNS = {
    "ingest_overlap.py": (["--users", "600", "--rounds", "1"],
                          r"read \+ store with a storing process / read alone: \d+\.\d\dx"),
    "sdk_overhead.py": (["--users", "600", "--rounds", "1"],
                        r"bare httpx\.Client \(sync\)\s+\d+\.\d\d s\s+CPU"),
    "graph_thread_profile.py": (["--users", "600", "--lines", "5"],
                                r"600 users in \d+\.\d\d s \(profiled\)"),
    "daemon_soak.py": (["--users", "200", "--cycles", "3", "--changes", "2"],
                       r"growth from the first cycle to the last: RSS [+-]\d"),
    "render_bench.py": (["--cards", "20"], r"publish into a new folder, then flush\s+\d+ µs"),
    "photos_bench.py": (["--users", "100", "--changes", "5", "--photo-changes", "3"],
                        r"success \(incremental\), pulled 5 users"),
    "emulator_bench.py": (["--users", "600"], r"3 pages of 200: [\d.]+ ms of server CPU"),
}


@pytest.mark.parametrize("script", sorted(SMALL_RUNS))
def test_benchmark_runs_to_its_last_figure(script: str) -> None:
    args, last = SMALL_RUNS[script]
    assert re.search(last, run_benchmark(script, *args))


@pytest.fixture
def bounds() -> Iterator[object]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import ingest_bounds

        yield ingest_bounds
    finally:
        sys.path.remove(str(BENCHMARKS))


def users(count: int) -> list[object]:
    values = [{"id": f"{i:08d}-0000-0000-0000-000000000000", "displayName": f"U{i}"}
              for i in range(count)]
    raw = json.dumps({"@odata.deltaLink": DELTA, "value": values}).encode()
    return list(parse_delta_page_raw(raw)[0].entries)


def stored(state: State) -> int:
    return int(state.db.execute("SELECT count(*) FROM users").fetchone()[0])


@pytest.mark.parametrize("mode", ["sqlite_free", "binds_only"])
def test_the_store_made_free_writes_no_row_and_is_put_back(
    bounds: object, mode: str, tmp_path: Path
) -> None:
    state = open_state(tmp_path / "state.db")
    try:
        with getattr(bounds, mode)(), state.transaction():
            assert state.ingest("contoso", users(3000))[0] == 3000  # counted as stored
        assert stored(state) == 0
        with state.transaction():
            state.ingest("contoso", users(10))
        assert stored(state) == 10
    finally:
        state.close()


def test_the_parse_made_free_answers_from_its_cache_and_is_put_back(bounds: object) -> None:
    import asyncio

    from cardsync.graph.source import GraphSource

    real = GraphSource._parse
    first = json.dumps({  # compact, as Graph sends it (the read-ahead reads its link raw)
        "@odata.nextLink": "https://graph.microsoft.com/v1.0/users/delta?$skiptoken=a",
        "value": [{"id": "11111111-1111-1111-1111-111111111111", "displayName": "A"}],
    }, separators=(",", ":")).encode()
    again = first.replace(b"skiptoken=a", b"skiptoken=b")  # the same users, another round
    cache: dict[bytes, object] = {}
    with bounds.parse_free(cache):  # type: ignore[attr-defined]
        one = asyncio.run(GraphSource._parse(None, first))  # type: ignore[arg-type]
        two = asyncio.run(GraphSource._parse(None, again))  # type: ignore[arg-type]
    assert GraphSource._parse is real
    assert len(cache) == 1
    assert two.entries is one.entries  # from the cache, not read again
    assert two.next_link.endswith("skiptoken=b")  # the link of the page it was given
