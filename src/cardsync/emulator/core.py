"""The :class:`GraphEmulator`: tenants, faults, the request log, and serving them over HTTPS."""

from __future__ import annotations

import threading
import uuid
from urllib.parse import unquote

from . import batch, control, graph, login, wire
from .directory import Tenant
from .faults import Faults
from .login import Grants
from .recorder import RECORDED_HEADERS, RequestLog, RequestRecord
from .server import EmulatorServer
from .wire import Request, Response


class GraphEmulator:
    """Microsoft Graph + Entra ID, in-process. The API is in docs/emulator.md."""

    def __init__(self, page_size: int = 200, gzip: bool = False) -> None:
        self.page_size = page_size
        # Graph compresses a response when the client accepts gzip (httpx, and so
        # msgraph-sdk, always does). Off by default: the benchmarks' figures are taken
        # against uncompressed pages (docs/performance.md).
        self.gzip = gzip
        self.faults = Faults()
        self.grants = Grants()
        self._log = RequestLog()
        self._tenants: dict[str, Tenant] = {}
        self._lock = threading.Lock()

    def add_tenant(self, tenant_id: str | None = None, name: str = "Contoso") -> Tenant:
        tenant = Tenant(tenant_id or str(uuid.uuid4()), name)
        with self._lock:
            if tenant.id in self._tenants:
                raise ValueError(f"tenant {tenant.id} already exists")
            self._tenants[tenant.id] = tenant
        return tenant

    def tenant(self, tenant_id: str) -> Tenant:
        return self._tenants[tenant_id]

    def find_tenant(self, key: str) -> Tenant | None:
        """A tenant by id or by its ``*.onmicrosoft.com`` domain, as Entra accepts both."""
        key = key.lower()
        with self._lock:
            tenants = list(self._tenants.values())
        return next((t for t in tenants if key in (t.id.lower(), t.domain)), None)

    @property
    def default_tenant(self) -> Tenant:
        """The first tenant added: the one the control API acts on."""
        with self._lock:
            if not self._tenants:
                raise KeyError("no tenant: call add_tenant() first")
            return next(iter(self._tenants.values()))

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the login and Graph requests answered so far (control calls excluded)."""
        return self._log.snapshot()

    def clear_requests(self) -> None:
        self._log.clear()

    def stats(self) -> dict[str, int]:
        """Counts of recorded requests by route kind, e.g. ``{"users/delta": 500, ...}``."""
        return self._log.stats()

    def serve(
        self, host: str = "127.0.0.1", port: int = 0, ca_dir: str | None = None
    ) -> EmulatorServer:
        """Start serving HTTPS in a background thread; stop it with ``with`` or ``stop()``."""
        return EmulatorServer(self.dispatch, host, port, ca_dir)

    def dispatch(self, request: Request) -> Response:
        """Answer one request and record it (control API calls are not recorded)."""
        if request.path.startswith(control.PREFIX + "/"):
            return control.handle(self, request)
        if request.path == "/v1.0/$batch" and request.method == "POST":
            response = batch.handle(self, request)
        elif request.path.startswith("/v1.0/"):
            response = graph.handle(self, request)
        else:
            response = login.handle(self, request)
        query = unquote(request.raw_query)
        headers = {k: v for k, v in request.headers.items() if k in RECORDED_HEADERS}
        self._log.add(
            RequestRecord(request.method, request.path, query, response.status, headers)
        )
        if self.gzip and request.path.startswith("/v1.0/"):
            return wire.gzipped(response, request.headers.get("accept-encoding", ""))
        return response
