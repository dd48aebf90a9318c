"""Sync a synthetic tenant through the Graph emulator and print the figures.

    python benchmarks/sync_bench.py --users 10000
    python benchmarks/sync_bench.py --users 100000 --changes 100

Three processes: this driver, the emulator (`python -m cardsync.emulator`) and
`cardsync run` itself, so the emulator's CPU does not count as cardsync's memory.
Measured, in one run so that ratios are fair on a noisy machine:

- floor: paging the same users/delta listing with a bare httpx client (and json.loads);
- initial `cardsync run`: wall time, peak RSS, Graph requests by kind;
- incremental `cardsync run` with nothing changed, then with --changes users changed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from _common import Emulator, cardsync, env_for, start_emulator, write_config

from cardsync.models import DELTA_SELECT


def bare_listing(emu: Emulator, parse: bool) -> tuple[float, int, int]:
    """Page through users/delta with a bare HTTP client: (seconds, users, requests)."""
    info = emu.info
    start = time.perf_counter()
    with httpx.Client(verify=info["ca_path"], timeout=120) as client:
        token = client.post(
            f"{info['url']}/{info['tenant_id']}/oauth2/v2.0/token",
            data={"grant_type": "client_credentials", "client_id": info["client_id"],
                  "client_secret": info["client_secret"],
                  "scope": "https://graph.microsoft.com/.default"},
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{info['graph_url']}/users/delta?$select={','.join(DELTA_SELECT)}"
        users = requests = 0
        while url:
            response = client.get(url, headers=headers)
            requests += 1
            if parse:
                page = json.loads(response.content)
                users += len(page["value"])
                url = page.get("@odata.nextLink")
            else:
                body = response.content
                users += body.count(b'"id":')
                marker = body.find(b'"@odata.nextLink":"')
                url = body[marker + 19: body.index(b'"', marker + 19)].decode() if marker >= 0 \
                    else None
    return time.perf_counter() - start, users, requests


def graph_requests(emu: Emulator) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for r in emu.requests():
        path = r["path"]
        if "/oauth2/" in path:
            kinds["token"] += 1
        elif path.endswith("openid-configuration"):
            kinds["openid"] += 1
        elif "/users/delta" in path:
            kinds["users/delta"] += 1
        else:
            kinds["other"] += 1
    return kinds


def row(label: str, seconds: float, rss: float | None, kinds: Counter[str] | None) -> None:
    req = ", ".join(f"{k} {v}" for k, v in sorted((kinds or {}).items())) or "-"
    mem = f"{rss:7.0f} MB" if rss else "       -"
    print(f"{label:<38} {seconds:8.2f} s  {mem}   {req}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cardsync-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        emu = start_emulator(args.users, work)
        print(f"emulator with {args.users} users ready in {time.perf_counter() - t0:.1f} s")
        try:
            config = write_config(work, emu)
            env = env_for(emu)
            print(f"{'phase':<38} {'wall':>10}  {'peak RSS':>10}   requests")

            emu.clear_requests()
            floor_raw, n, reqs = bare_listing(emu, parse=False)
            row(f"floor: bare listing ({n} users)", floor_raw, None, Counter(pages=reqs))
            floor_parse, _, _ = bare_listing(emu, parse=True)
            row("floor: bare listing + json.loads", floor_parse, None, None)

            emu.clear_requests()
            initial = cardsync(config, "run", env=env)
            assert initial.returncode == 0, initial.stderr
            row("cardsync run (initial)", initial.seconds, initial.peak_rss_mb,
                graph_requests(emu))

            emu.clear_requests()
            idle = cardsync(config, "run", env=env)
            assert idle.returncode == 0, idle.stderr
            row("cardsync run (nothing changed)", idle.seconds, idle.peak_rss_mb,
                graph_requests(emu))

            ids = emu.control("GET", "/users")[: args.changes]
            for i, uid in enumerate(ids):
                emu.control("PATCH", f"/users/{uid}", json={"jobTitle": f"Benchmark {i}"})
            emu.clear_requests()
            changed = cardsync(config, "run", env=env)
            assert changed.returncode == 0, changed.stderr
            row(f"cardsync run ({len(ids)} users changed)", changed.seconds,
                changed.peak_rss_mb, graph_requests(emu))
            print(changed.stdout.strip())

            print()
            print(f"initial / bare listing:          {initial.seconds / floor_raw:6.1f}x")
            print(f"initial / listing + json.loads:  {initial.seconds / floor_parse:6.1f}x")
            print(f"cards per second (initial):      {args.users / initial.seconds:8.0f}")
        finally:
            emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
