"""Sync cycles the way `cardsync run --daemon` runs them, with the Graph requests of each.

    python benchmarks/daemon_cycles.py CONFIG EMULATOR_URL CA_FILE [CYCLES]

The daemon keeps one Graph source per organization for its whole life (service.syncer
with a caching source factory and close_sources=False, as cardsync.daemon does), so
tokens and connections outlive a cycle. Prints one JSON line: per cycle, its wall
time and the emulator's request log by kind.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx
from _common import request_kinds

from cardsync import service
from cardsync.config import load


def main() -> int:
    config = load(sys.argv[1])
    control = f"{sys.argv[2]}/_emulator/requests"
    cycles = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    sources: dict[str, Any] = {}

    def cached_source(org: Any) -> Any:
        if org.slug not in sources:
            sources[org.slug] = service.graph_source(org)
        return sources[org.slug]

    out = []
    with httpx.Client(verify=sys.argv[3]) as emulator:
        try:
            for _ in range(cycles):
                emulator.delete(control).raise_for_status()
                started = time.perf_counter()
                with service.syncer(config, None, cached_source, close_sources=False) as sync:
                    results = [o.result for o in sync.cycle()]
                seconds = time.perf_counter() - started
                requests = dict(request_kinds(emulator.get(control).json()))
                out.append({"seconds": seconds, "results": results, "requests": requests})
        finally:
            for source in sources.values():
                source.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
