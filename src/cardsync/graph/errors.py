"""Turn what the SDK, azure-identity, MSAL and httpx raise into cardsync errors.

Three questions are asked of a failed request:

- :func:`classify`: retry it (throttling, a dropped connection) or give up?
- :func:`retry_after`: how long did the server ask us to wait?
- :func:`to_cardsync_error`: which one-line :class:`~cardsync.errors.CardsyncError`
  explains it?

Nothing here imports msgraph or azure: exceptions are recognised by their attributes
and class names, so this module is cheap and works with whatever the SDK raises.
Every piece of text that came from outside goes through :func:`~cardsync.errors.redact`.
"""

from __future__ import annotations

import email.utils
import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from ..config import EntraConfig
from ..errors import (
    AuthError,
    CardsyncError,
    ConsentError,
    DeltaExpiredError,
    GraphError,
    UnreachableError,
    redact,
)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
DELTA_EXPIRED_CODES = ("syncstatenotfound", "resyncrequired")

SECRET_HINT = (
    "create a new client secret under App registrations > Certificates & secrets "
    "and configure its Value (not its Secret ID)"
)
CONSENT_HINT = (
    "add the Microsoft Graph application permission User.Read.All to the app registration "
    "(API permissions) and grant admin consent"
)
TLS_HINT = "if a proxy inspects TLS, point SSL_CERT_FILE and REQUESTS_CA_BUNDLE at its CA bundle"

_AADSTS = re.compile(r"AADSTS(\d+)")
_HOST_IN_TEXT = re.compile(r"host='([^']+)'(?:, port=(\d+))?")
_REFUSED_TEXT = ("connection refused", "errno 111", "winerror 10061", "actively refused")
_DNS_TEXT = (
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
    "getaddrinfo failed",
    "no address associated",
    "name resolution",
    "failed to resolve",
)


class Kind(Enum):
    THROTTLED = "throttled"  # 429/502/503/504: wait and retry
    NETWORK = "network"  # connection reset, timeout: retry
    REFUSED = "refused"  # connection refused, DNS failure: a couple of tries only
    FATAL = "fatal"  # anything else: explain and stop


@dataclass(frozen=True)
class Failure:
    kind: Kind
    host: str  # the host that failed: the login host for token errors, else Graph's
    service: str  # "Entra ID" or "Microsoft Graph", for messages


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes/contexts, each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__]


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a Graph error (kiota's APIError and its ODataError)."""
    status = getattr(exc, "response_status_code", None)
    return status if isinstance(status, int) else None


def odata_code(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return code if isinstance(code, str) else ""


def odata_message(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None)
    if isinstance(message, str) and message:
        return message
    return str(getattr(exc, "message", "") or "")


def _is_token_error(exc: BaseException) -> bool:
    return any(type(e).__name__ == "ClientAuthenticationError" for e in chain(exc))


def _text(exc: BaseException) -> str:
    return " | ".join(f"{type(e).__name__}: {e}" for e in chain(exc)).lower()


def classify(exc: BaseException, entra: EntraConfig) -> Failure:
    if status_of(exc) is not None:
        kind = Kind.THROTTLED if status_of(exc) in RETRY_STATUSES else Kind.FATAL
        return Failure(kind, _host(entra.graph_url), "Microsoft Graph")
    if _is_token_error(exc):
        host, service = _host(entra.authority), "Entra ID"
    else:
        host, service = _host(entra.graph_url), "Microsoft Graph"
    return Failure(_network_kind(exc), _failed_host(exc) or host, service)


def _failed_host(exc: BaseException) -> str | None:
    """The host a connection failed to, when the exception says: MSAL may call Microsoft's
    instance discovery, which is neither the configured login host nor Graph."""
    for item in chain(exc):
        try:
            url = item.request.url  # type: ignore[attr-defined]  # httpx errors
        except (AttributeError, RuntimeError):
            url = None
        if url is not None and getattr(url, "host", None):
            return f"{url.host}:{url.port}" if url.port else str(url.host)
        match = _HOST_IN_TEXT.search(str(item))  # urllib3, under requests and MSAL
        if match:
            port = match.group(2)
            return match.group(1) if port in (None, "443") else f"{match.group(1)}:{port}"
    return None


def _network_kind(exc: BaseException) -> Kind:
    items = list(chain(exc))
    text = _text(exc)
    if "certificate verify failed" in text or any(isinstance(e, ssl.SSLError) for e in items):
        return Kind.FATAL
    if _is_refused(items, text) or _is_dns(items, text):
        return Kind.REFUSED
    if any(_is_network_error(e) for e in items):
        if any(type(e).__name__ in ("ConnectTimeout", "ConnectError") for e in items):
            return Kind.REFUSED
        return Kind.NETWORK
    return Kind.FATAL


def _is_refused(items: list[BaseException], text: str) -> bool:
    return any(isinstance(e, ConnectionRefusedError) for e in items) or any(
        marker in text for marker in _REFUSED_TEXT
    )


def _is_dns(items: list[BaseException], text: str) -> bool:
    return any(isinstance(e, socket.gaierror) for e in items) or any(
        marker in text for marker in _DNS_TEXT
    )


def _network_reason(exc: BaseException, entra: EntraConfig) -> str:
    items = list(chain(exc))
    text = _text(exc)
    if _is_dns(items, text):
        return "its name does not resolve (DNS)"
    if _is_refused(items, text):
        return "connection refused"
    if "timeout" in text or "timed out" in text:
        return "the connection timed out"
    if "reset" in text:
        return "the connection was reset"
    return _reason(exc, entra)


def _is_network_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    name = type(exc).__name__
    if module.startswith(("httpx", "httpcore")) and (
        name.endswith(("Error", "Timeout")) and name not in ("HTTPStatusError", "InvalidURL")
    ):
        return True
    if name in ("ServiceRequestError", "ServiceResponseError"):  # azure-core, token requests
        return True
    return isinstance(exc, ConnectionError | TimeoutError)


def retry_after(exc: BaseException) -> float | None:
    """Seconds from a Retry-After header (integer or HTTP-date), or None."""
    headers = getattr(exc, "response_headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except AttributeError:
        return None
    return parse_retry_after(value) if isinstance(value, str) else None


def parse_retry_after(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def is_delta_expired(exc: BaseException) -> bool:
    """A rejected deltaLink: 410 Gone, or 400 syncStateNotFound / resyncRequired."""
    status = status_of(exc)
    if status == 410:
        return True
    if status != 400:
        return False
    text = f"{odata_code(exc)} {odata_message(exc)}".lower()
    return any(code in text for code in DELTA_EXPIRED_CODES)


def to_cardsync_error(exc: BaseException, entra: EntraConfig, what: str) -> CardsyncError:
    """One clear line for a failure of ``what`` (e.g. "GET users/delta")."""
    if isinstance(exc, CardsyncError):
        return exc
    failure = classify(exc, entra)
    if status_of(exc) is not None:
        return _graph_error(exc, entra, what)
    if failure.kind in (Kind.REFUSED, Kind.NETWORK):
        return UnreachableError(
            f"cannot reach {failure.service} at {failure.host}: {_network_reason(exc, entra)}",
            "check the network and proxy settings (HTTPS_PROXY), and 'cloud' or the "
            "authority/Graph hosts in the configuration",
        )
    text = _text(exc)
    if "certificate verify failed" in text or any(isinstance(e, ssl.SSLError) for e in chain(exc)):
        return UnreachableError(
            f"cannot establish a trusted TLS connection to {failure.service} at {failure.host}",
            TLS_HINT,
        )
    if _is_token_error(exc) or _AADSTS.search(text):
        return _token_error(exc, entra)
    return GraphError(f"{what} failed: {_reason(exc, entra)}")


def _graph_error(exc: BaseException, entra: EntraConfig, what: str) -> CardsyncError:
    status = status_of(exc)
    code = odata_code(exc)
    detail = _one_line(redact(f"{code}: {odata_message(exc)}".strip(": "), entra.secrets()))
    detail = f" ({detail})" if detail else ""
    if status == 403:
        return ConsentError(
            f"app {entra.client_id} may not read users in tenant {entra.tenant_id}: "
            f"Microsoft Graph answered 403 Forbidden to {what}{detail}",
            CONSENT_HINT,
        )
    if status == 401:
        return AuthError(
            f"Microsoft Graph rejected the access token of app {entra.client_id}{detail}",
            "check that 'cloud' matches the tenant's cloud and that the app is enabled",
        )
    if is_delta_expired(exc):
        return DeltaExpiredError(f"Microsoft Graph no longer accepts the delta link{detail}")
    return GraphError(f"{what} failed: Microsoft Graph answered {status}{detail}")


def _token_error(exc: BaseException, entra: EntraConfig) -> AuthError:
    text = " ".join(str(e) for e in chain(exc))
    match = _AADSTS.search(text)
    code = match.group(1) if match else ""
    tenant, client = entra.tenant_id, entra.client_id
    login = _host(entra.authority)
    if code == "7000215":
        return AuthError(f"Entra ID rejected the client secret for tenant {tenant}", SECRET_HINT)
    if code == "7000222":
        return AuthError(f"the client secret of app {client} has expired", SECRET_HINT)
    if code == "700016":
        return AuthError(
            f"Entra ID has no application with client id {client} in tenant {tenant}",
            "check client_id (Application (client) ID on the app registration's Overview) "
            "and that the app is registered in, or consented to, this tenant",
        )
    if code in ("90002", "900023", "90072") or ("tenant" in text.lower() and "not found" in text):
        return AuthError(
            f"Entra ID at {login} does not know tenant {tenant}",
            "check tenant_id (Directory (tenant) ID) and 'cloud' (national clouds have "
            "their own tenants)",
        )
    if code in ("700027", "700024", "700023", "50012"):
        return AuthError(
            f"Entra ID rejected the certificate of app {client} in tenant {tenant}",
            "upload the certificate's public key under App registrations > "
            "Certificates & secrets, and check certificate_path",
        )
    if code in ("500011", "70011"):
        return AuthError(
            f"Entra ID cannot issue a token for {entra.graph_scope} in tenant {tenant}",
            "check that 'cloud' matches the tenant's cloud",
        )
    reason = _reason(exc, entra)
    hint = f"see https://login.microsoftonline.com/error?code={code}" if code else None
    message = f"Entra ID refused a token for app {client} in tenant {tenant}: {reason}"
    return AuthError(message, hint)


def _reason(exc: BaseException, entra: EntraConfig) -> str:
    """The most specific message in the chain, on one line, redacted and short."""
    text = ""
    for item in chain(exc):
        message = str(item).strip()
        if message:
            match = _AADSTS.search(message)
            if match:  # keep the AADSTS sentence, not the OIDC URL and JSON around it
                message = message[match.start() :]
                message = re.split(r"(?<=\.)\s|\\r|\\n|\"", message)[0]
                return _one_line(redact(message, entra.secrets()))
            text = text or message
    return _one_line(redact(text or type(exc).__name__, entra.secrets()))


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _host(url: str) -> str:
    parts = urlsplit(url if "//" in url else f"https://{url}")
    return parts.netloc or url


def same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    default = {"https": 443, "http": 80}
    try:
        return (
            a.scheme.lower() == b.scheme.lower()
            and (a.hostname or "").lower() == (b.hostname or "").lower()
            and (a.port or default.get(a.scheme.lower())) == (b.port or default.get(b.scheme))
        )
    except ValueError:  # a port that is not a number
        return False


__all__ = [
    "Failure",
    "Kind",
    "classify",
    "is_delta_expired",
    "parse_retry_after",
    "retry_after",
    "same_origin",
    "status_of",
    "to_cardsync_error",
]
