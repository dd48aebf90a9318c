"""The async half: one credential, one GraphServiceClient, and a time-bounded send.

msgraph-sdk does auth (azure-identity), redirects and a first layer of retries (kiota's
RetryHandler, a few quick attempts). :meth:`GraphClient.get` wraps a second layer
around it that is bounded by time, not by count, so a long throttling spell delays a
sync instead of losing a page:

- 429/502/503/504: wait for Retry-After (seconds or an HTTP date), else a capped
  exponential backoff, until ``retry_budget`` seconds of unbroken failure;
- a dropped connection or a timeout: the same, once Graph has answered before;
- connection refused or a DNS failure before any answer: two short retries, then
  :class:`~cardsync.errors.UnreachableError` (a wrong host should fail fast).

Everything here runs on the event loop that :class:`~cardsync.graph.source.GraphSource`
owns; msgraph and azure are imported when a client is built, never at import time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import warnings
from dataclasses import dataclass
from typing import Any

from ..config import EntraConfig
from ..errors import AuthError, CardsyncError, ThrottledError, redact
from . import errors as graph_errors
from .errors import Kind

log = logging.getLogger("cardsync.graph")

FIRST_CONTACT_TRIES = 3  # connection refused / DNS failure before Graph ever answered
BACKOFF_START = 1.0  # seconds, when the server gives no Retry-After
BACKOFF_CAP = 60.0
SDK_RETRIES = 3  # kiota's own quick retries inside one send
CONNECT_TIMEOUT = 15.0
IDLE_HANDLERS = frozenset({
    "ParametersNameDecodingHandler",
    "UrlReplaceHandler",
    "HeadersInspectionHandler",
    "BodyInspectionHandler",
})
READ_TIMEOUT = 100.0


@dataclass
class Stats:
    """Counters, updated on the loop's thread and read from any thread."""

    requests: int = 0  # HTTP requests sent to Graph, retries included (not token requests)
    throttled: int = 0  # 429/502/503/504 answers among them
    skipped_entries: int = 0  # delta entries without a valid id


def make_credential(entra: EntraConfig) -> Any:
    """ClientSecretCredential, or CertificateCredential when a certificate is configured."""
    from azure.identity import CertificateCredential, ClientSecretCredential

    _quiet_azure_logging()
    common: dict[str, Any] = {
        "authority": entra.authority,
        "disable_instance_discovery": entra.custom_authority,
        # azure-core would retry a refused connection 3 times over ~5 s; our loop
        # decides instead (fast for a wrong host, patient once the host has answered).
        "retry_connect": 1,
    }
    if entra.certificate_path is not None:
        try:
            return CertificateCredential(
                entra.tenant_id,
                entra.client_id,
                certificate_path=str(entra.certificate_path),
                password=entra.certificate_password,
                **common,
            )
        except (OSError, ValueError) as exc:
            reason = redact(f"{type(exc).__name__}: {exc}", entra.secrets())
            raise AuthError(
                f"cannot load the certificate {entra.certificate_path}: {reason}",
                "certificate_path must be a PEM or PKCS12 file holding the private key; "
                "check certificate_password",
            ) from exc
    if not entra.client_secret:
        raise AuthError(
            f"no client_secret or certificate_path is configured for tenant {entra.tenant_id}",
            graph_errors.SECRET_HINT,
        )
    try:
        return ClientSecretCredential(
            entra.tenant_id, entra.client_id, entra.client_secret, **common
        )
    except ValueError as exc:  # e.g. a tenant id with characters Entra never uses
        reason = redact(str(exc), entra.secrets())
        raise AuthError(
            f"cannot use tenant {entra.tenant_id!r} with authority {entra.authority}: {reason}",
            "check tenant_id (Directory (tenant) ID) and the authority host",
        ) from exc


def _quiet_azure_logging() -> None:
    """azure-identity logs every failed get_token as a WARNING. Our error says the same
    in one line, so keep azure's copy off stderr unless the application configured
    logging (a NullHandler stops Python's last-resort handler, nothing else)."""
    logger = logging.getLogger("azure.identity")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _counting_middleware(stats: Stats) -> Any:
    from kiota_http.middleware.middleware import BaseMiddleware

    class CountingHandler(BaseMiddleware):
        """Last in the pipeline, so it sees every attempt the RetryHandler makes."""

        async def send(self, request: Any, transport: Any) -> Any:
            stats.requests += 1
            response = await super().send(request, transport)
            if response.status_code in graph_errors.RETRY_STATUSES:
                stats.throttled += 1
            return response

    return CountingHandler()


@functools.cache
def _telemetry_handler(base: type) -> type:
    """msgraph-core's GraphTelemetryHandler, deciding "is this a Microsoft Graph host?"
    from the URL httpx has already parsed. The SDK's own check re-parses the whole URL
    with urllib3 on every request (~1 KB for a delta link: 0.15 of 2.3 profiled seconds
    over 500 requests). Same rule: telemetry headers go to the national clouds' Graph
    hosts only."""
    from msgraph_core._enums import NationalClouds

    hosts = frozenset(cloud.value for cloud in NationalClouds)

    class TelemetryHandler(base):  # type: ignore[misc, valid-type]
        def is_graph_url(self, url: Any) -> bool:
            netloc = url.netloc.decode("ascii") if isinstance(url.netloc, bytes) else ""
            return f"{url.scheme}://{netloc}" in hosts

    TelemetryHandler.__name__ = TelemetryHandler.__qualname__ = base.__name__
    return TelemetryHandler


def make_graph_client(entra: EntraConfig, credential: Any, stats: Stats) -> tuple[Any, Any]:
    """A GraphServiceClient on the default middleware plus a request counter, and the
    httpx.AsyncClient under it (which the caller closes).

    The httpx client is created here, so SSL_CERT_FILE (and proxy variables) are read
    now, as httpx does; the credential (requests) reads REQUESTS_CA_BUNDLE per request.
    """
    import httpx
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from kiota_http.kiota_client_factory import KiotaClientFactory
    from kiota_http.middleware.options import RetryHandlerOption
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_request_adapter import options as sdk_options
    from msgraph.graph_service_client import GraphServiceClient
    from msgraph_core import GraphClientFactory
    from msgraph_core.middleware import GraphTelemetryHandler
    from msgraph_core.middleware.options import GraphTelemetryHandlerOption

    from .transport import use_asyncio_streams

    with warnings.catch_warnings():
        # The generated request builders we use warn about their own deprecated
        # configuration classes when imported; that is noise for cardsync's users.
        warnings.simplefilter("ignore", DeprecationWarning)
        import msgraph.generated.users.delta.delta_request_builder  # noqa: F401
        import msgraph.generated.users.users_request_builder  # noqa: F401

    options = dict(sdk_options)
    # No 3 s base delay on top of the SDK's backoff: our own loop does the long waits.
    options[RetryHandlerOption.get_key()] = RetryHandlerOption(delay=0.0, max_retries=SDK_RETRIES)
    # The SDK's default chain less four handlers that do nothing for cardsync's requests
    # but rebuild or re-parse each ~1 KB delta link: parameter-name decoding (our query
    # names are never percent-encoded), /me URL replacement, and header and body
    # inspection (only on when a request asks). ~10% of the SDK's CPU per request,
    # measured side by side (docs/performance.md). Redirects, retries, the user agent and
    # telemetry (client-request-id, SdkVersion) stay.
    middleware = [
        handler
        for handler in KiotaClientFactory.get_default_middleware(options)
        if type(handler).__name__ not in IDLE_HANDLERS
    ]
    telemetry = options[GraphTelemetryHandlerOption.get_key()]
    middleware.append(_telemetry_handler(GraphTelemetryHandler)(options=telemetry))
    middleware.append(_counting_middleware(stats))

    http = KiotaClientFactory.get_default_client()
    http.timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    # Connections on asyncio's own streams instead of anyio's: ~12% off an ingest.
    use_asyncio_streams(http)
    http = GraphClientFactory.create_with_custom_middleware(middleware, client=http)
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[entra.graph_scope])
    client = GraphServiceClient(request_adapter=GraphRequestAdapter(auth, client=http))
    client.request_adapter.base_url = entra.graph_url
    return client, http


class GraphClient:
    """Sends GET requests through msgraph-sdk with the time-bounded retry loop."""

    def __init__(self, entra: EntraConfig, *, retry_budget: float, stats: Stats) -> None:
        self.entra = entra
        self.retry_budget = retry_budget
        self.stats = stats
        self.credential = make_credential(entra)
        self.sdk, self._http = make_graph_client(entra, self.credential, stats)
        self.contacted = False  # has Graph ever answered? (then refusals are retried)
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        self._error_map = {"XXX": ODataError}

    async def get(self, build: Any, what: str, *, missing_ok: bool = False) -> bytes | None:
        """Send the request ``build()`` makes and return the body.

        ``missing_ok``: a 404 returns None instead of raising. What is not retried
        becomes one CardsyncError (a rejected delta link: DeltaExpiredError) with the
        SDK's exception as ``__cause__``.
        """
        started = time.monotonic()
        attempt = refused = 0
        while True:
            try:
                body = await self.sdk.request_adapter.send_primitive_async(
                    build(), "bytes", self._error_map
                )
            except Exception as exc:
                status = graph_errors.status_of(exc)
                if status is not None:
                    self.contacted = True
                    if missing_ok and status == 404:
                        return None
                failure = graph_errors.classify(exc, self.entra)
                if failure.kind is Kind.REFUSED and not self.contacted:
                    refused += 1
                delay = self._delay(exc, failure, attempt, refused)
                if delay is None:
                    raise graph_errors.to_cardsync_error(exc, self.entra, what) from exc
                elapsed = time.monotonic() - started
                if elapsed + delay > self.retry_budget:
                    raise self._gave_up(exc, failure, what, elapsed) from exc
                log.info("%s: %s; retrying in %.1f s", what, self._describe(exc, failure), delay)
                attempt += 1
                await asyncio.sleep(delay)
            else:
                self.contacted = True
                return body if isinstance(body, bytes) else None

    def _delay(
        self, exc: BaseException, failure: graph_errors.Failure, attempt: int, refused: int
    ) -> float | None:
        """Seconds to wait before the next attempt, or None not to retry."""
        if failure.kind is Kind.FATAL:
            return None
        if failure.kind is Kind.REFUSED and not self.contacted:
            # Never reached this host: most likely a wrong host or port. Fail fast.
            return None if refused >= FIRST_CONTACT_TRIES else 0.2 * refused
        asked = graph_errors.retry_after(exc)
        if asked is not None and asked > 0:
            return asked
        backoff = min(BACKOFF_CAP, BACKOFF_START * 2.0**attempt)
        return backoff * (0.5 + random.random() / 2)  # jitter: many daemons, one tenant

    def _describe(self, exc: BaseException, failure: graph_errors.Failure) -> str:
        status = graph_errors.status_of(exc)
        if status is not None:
            return f"Microsoft Graph answered {status}"
        reason = redact(f"{type(exc).__name__}: {exc}", self.entra.secrets())
        return f"{failure.host}: {' '.join(reason.split())[:200]}"

    def _gave_up(
        self, exc: BaseException, failure: graph_errors.Failure, what: str, elapsed: float
    ) -> CardsyncError:
        if failure.kind is Kind.THROTTLED:
            status = graph_errors.status_of(exc)
            return ThrottledError(
                f"{what}: Microsoft Graph kept answering {status} (throttled or unavailable) "
                f"for {elapsed:.0f} s",
                "the next run tries again; if this persists, another app may be using up "
                "the tenant's Graph quota",
            )
        error = graph_errors.to_cardsync_error(exc, self.entra, what)
        error.message = f"{error.message} (retried for {elapsed:.0f} s)"
        error.args = (error.message,)
        return error

    async def aclose(self) -> None:
        try:
            await self._http.aclose()
            # msgraph-core's AsyncGraphTransport has no aclose(), so the client's aclose()
            # never reaches httpx's connection pools under it: close them ourselves.
            # (_transport and _mounts are where msgraph-core itself installs them.)
            wrappers = [self._http._transport, *self._http._mounts.values()]
            for wrapper in wrappers:
                inner = getattr(wrapper, "transport", None)
                if inner is not None:
                    await inner.aclose()
            await asyncio.sleep(0)  # let asyncio finish closing the sockets
        finally:
            close = getattr(self.credential, "close", None)
            if close is not None:
                close()


__all__ = ["GraphClient", "Stats", "make_credential", "make_graph_client"]
