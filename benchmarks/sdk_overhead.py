"""What HTTP costs cardsync per users/delta page: the same round of raw pages fetched
through msgraph-sdk's request adapter (as cardsync's Graph source does), through a bare
async httpx client on the same event loop, and through a bare sync httpx client (the
bare listing of sync_bench.py).

    python benchmarks/sdk_overhead.py [--users 100000] [--rounds 3]

No page is parsed: each client follows the round's nextLinks read from the raw bytes,
one request at a time. For each client it prints the wall seconds of a round and the CPU
seconds of the thread that sent the requests (token requests excluded: every client
holds a token before the clock starts), and at the end their medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from _common import graph_source

from cardsync.graph.source import _next_link_hint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, list[tuple[float, float]]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        graph_source(args.users, Path(tmp)) as (emu, source),
    ):
        first = source.first_delta_url()
        token = source._client.credential.get_token(source.entra.graph_scope).token  # noqa: SLF001
        headers = {"Authorization": f"Bearer {token}"}

        async def through_sdk() -> tuple[float, float]:
            await source._fetch_body(first)  # noqa: SLF001 - the SDK's own token, once
            return await timed_async(lambda url: source._fetch_body(url))  # noqa: SLF001

        async def through_async_httpx() -> tuple[float, float]:
            async with httpx.AsyncClient(verify=emu.info["ca_path"], headers=headers) as client:

                async def fetch(url: str) -> bytes:
                    return (await client.get(url)).content

                return await timed_async(fetch)

        async def timed_async(fetch: Callable[[str], Awaitable[bytes]]) -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.thread_time()
            url: str | None = first
            while url:
                url = _next_link_hint(await fetch(url))
            return time.perf_counter() - wall, time.thread_time() - cpu

        def through_sync_httpx() -> tuple[float, float]:
            with httpx.Client(verify=emu.info["ca_path"], headers=headers) as client:
                wall, cpu = time.perf_counter(), time.thread_time()
                url: str | None = first
                while url:
                    url = _next_link_hint(client.get(url).content)
                return time.perf_counter() - wall, time.thread_time() - cpu

        runs = {
            "msgraph-sdk request adapter": lambda: source._loop.run(through_sdk()),  # noqa: SLF001
            "bare httpx.AsyncClient": lambda: source._loop.run(through_async_httpx()),  # noqa: SLF001
            "bare httpx.Client (sync)": through_sync_httpx,
        }
        print(f"{args.users} users; wall and CPU of the sending thread for one round")
        for _ in range(args.rounds):
            for name, run in runs.items():
                wall, cpu = run()
                figures.setdefault(name, []).append((wall, cpu))
                print(f"  {name:<30} {wall:6.2f} s  CPU {cpu:5.2f} s", flush=True)
    print("medians:")
    for name, values in figures.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"  {name:<30} {wall:6.2f} s  CPU {cpu:5.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
