"""A Microsoft Graph + Entra ID emulator for tests, benchmarks and ``cardsync demo``.

The real msgraph-sdk and azure-identity clients talk to it unmodified over HTTPS on
loopback, trusting a throwaway CA. The Python API is documented in docs/emulator.md.

    core       GraphEmulator: tenants, faults, request log, serve()
    directory  Tenant: apps, users, photos and the users change log
    groups     groups, memberships and app role assignments (scope)
    users      the user object: properties, defaults, JSON views
    delta      delta paging: rounds, opaque links, paging faults
    sources    users/delta and groups/delta as delta sources
    login      Entra's OpenID metadata and token endpoints
    assertions certificate credentials: checking client_assertion JWTs
    graph      Graph routes under /v1.0; batch: $batch
    control    the /_emulator/ HTTP control API
    faults     failure injection;  recorder: the request log
    server     threaded HTTPS server;  tls: throwaway CA;  wire: request/response data
    sample     a deterministic sample company
"""

from .core import GraphEmulator
from .directory import App, Tenant
from .faults import Faults
from .recorder import RequestRecord
from .server import EmulatorServer

__all__ = ["App", "EmulatorServer", "Faults", "GraphEmulator", "RequestRecord", "Tenant"]
