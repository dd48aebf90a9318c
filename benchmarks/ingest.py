"""cardsync's Graph ingest alone: list, parse and store, no planning or rendering.

    python benchmarks/ingest.py CONFIG [--no-store]

Pulls one full users/delta round for the first organization of CONFIG into a fresh
state file, exactly as a sync cycle's first step does (cardsync.sync.Syncer's pull:
msgraph-sdk request adapter with auth and retries, each user kept as Graph's JSON text
(GraphUser), multi-row upserts in one transaction), and prints one JSON line: seconds
spent importing the SDK, building the client, and pulling (token request included, up
to the state file closed and checkpointed), and the users stored. Opening the state
file is counted; building the card backend, which an ingest does not use, is not.
``--no-store`` only lists and parses (GraphSource.delta), to tell the Graph source's
share from the state's.
"""

from __future__ import annotations

import json
import sys
import time

started = time.perf_counter()

from cardsync import service  # noqa: E402
from cardsync.config import load  # noqa: E402
from cardsync.state import open_state  # noqa: E402
from cardsync.sync import OrgOutcome, Syncer  # noqa: E402


def main() -> int:
    config = load(sys.argv[1])
    org = config.organizations[0]
    imported = time.perf_counter()
    # What building a Graph source imports: cardsync's Graph code, the SDK, azure-identity,
    # and httpcore (httpx imports it when it builds a client; the bare listing's process
    # has imported it before its clock starts).
    import azure.identity  # noqa: F401
    import httpcore  # noqa: F401
    import kiota_authentication_azure.azure_identity_authentication_provider  # noqa: F401
    import kiota_http.kiota_client_factory  # noqa: F401
    import msgraph.generated.models.o_data_errors.o_data_error  # noqa: F401
    import msgraph.generated.users.delta.delta_request_builder  # noqa: F401
    import msgraph.graph_request_adapter  # noqa: F401
    import msgraph.graph_service_client  # noqa: F401
    import msgraph_core  # noqa: F401

    import cardsync.graph.source  # noqa: F401

    # The card backend is not part of an ingest (Syncer needs one): built before the clock
    # starts, like the SDK imports (the local backend: jinja2 and its templates, ~0.09 s).
    backend = service.make_backend(config)
    sdk = time.perf_counter()
    state = open_state(config.state.path)
    syncer = Syncer(config, state, backend, service.graph_source)
    try:
        source = syncer.source(org)  # credential and GraphServiceClient
        built = time.perf_counter()
        outcome = OrgOutcome(org.slug)
        if "--no-store" in sys.argv:
            for page in source.delta(None):
                outcome.pulled += len(page.entries)
        else:
            syncer._pull(org, outcome)  # the pull step of a cycle (private: no public seam)
        requests = source.requests_made  # type: ignore[attr-defined]
    finally:
        syncer.close()
        state.close()  # the last WAL checkpoint: part of storing
    pulled = time.perf_counter()
    print(json.dumps({
        "users": outcome.pulled,
        "requests": requests,
        "imports": imported - started,
        "sdk_import": sdk - imported,
        "client": built - sdk,
        "pull": pulled - built,
        "ingest": pulled - sdk,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
