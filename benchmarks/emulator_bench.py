"""How much server CPU the Graph emulator spends per users/delta page, so that it is
never the bottleneck of the sync benchmarks. In-process, no network.

    python benchmarks/emulator_bench.py --users 20000
"""

from __future__ import annotations

import argparse
import json
import time

from cardsync.emulator import GraphEmulator
from cardsync.emulator.sample import sample_users
from cardsync.emulator.wire import Request
from cardsync.models import DELTA_SELECT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    args = parser.parse_args()
    emu = GraphEmulator(page_size=200)
    tenant = emu.add_tenant()
    started = time.perf_counter()
    tenant.add_users(sample_users(args.users))
    added = time.perf_counter() - started
    token = emu.grants.issue(tenant.id, tenant.add_app().client_id, 600)
    headers = {"authorization": f"Bearer {token}"}
    url = f"/v1.0/users/delta?$select={','.join(DELTA_SELECT)}"
    took, pages = 0.0, 0
    while url:
        path, _, query = url.removeprefix("https://127.0.0.1:1").partition("?")
        started = time.perf_counter()
        response = emu.dispatch(Request("GET", path, query, headers, b"", "https://127.0.0.1:1"))
        took += time.perf_counter() - started
        pages += 1
        url = json.loads(response.body).get("@odata.nextLink")
    print(f"add_users({args.users}): {added:.2f} s")
    print(f"{pages} pages of 200: {took / pages * 1000:.2f} ms of server CPU per page")


if __name__ == "__main__":
    main()
