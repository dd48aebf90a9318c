"""Entra ID's login endpoints, as far as a daemon's client credentials flow needs them.

MSAL (inside azure-identity's sync credentials) first GETs the tenant's OpenID metadata and
then POSTs the ``token_endpoint`` named there. Errors carry the AADSTS codes Entra uses, so a
client's error mapping can be tested against the real wording.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from .assertions import ASSERTION_TYPE, check_assertion
from .wire import Request, Response, entra_error, json_response

if TYPE_CHECKING:
    from .core import GraphEmulator
    from .directory import Tenant

_OPENID = re.compile(r"/([^/]+)/v2\.0/\.well-known/openid-configuration")
_TOKEN = re.compile(r"/([^/]+)/oauth2/v2\.0/token")


@dataclass(frozen=True)
class Grant:
    """What an access token stands for. Tokens are opaque: Graph looks them up here."""

    tenant_id: str
    client_id: str
    expires_at: float


class Grants:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {}

    def issue(self, tenant_id: str, client_id: str, ttl: float) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._grants[token] = Grant(tenant_id, client_id, time.time() + ttl)
        return token

    def lookup(self, token: str) -> Grant | None:
        with self._lock:
            return self._grants.get(token)


def handle(emu: GraphEmulator, request: Request) -> Response:
    if request.method == "GET" and (match := _OPENID.fullmatch(request.path)):
        return _openid_configuration(emu, request, match.group(1))
    if request.method == "POST" and (match := _TOKEN.fullmatch(request.path)):
        return _token(emu, request, match.group(1))
    return json_response(404, {"error": "not_found", "error_description": "No such endpoint."})


def _unknown_tenant(key: str) -> Response:
    return entra_error(
        400,
        "invalid_tenant",
        90002,
        f"Tenant '{key}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud. Check with your subscription administrator, this may "
        "happen if there are no active subscriptions for the tenant.",
    )


def _openid_configuration(emu: GraphEmulator, request: Request, key: str) -> Response:
    tenant = emu.find_tenant(key)
    if tenant is None:
        return _unknown_tenant(key)
    base = f"{request.base_url}/{tenant.id}"
    return json_response(
        200,
        {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "jwks_uri": f"{request.base_url}/{tenant.id}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "request_uri_parameter_supported": False,
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "msgraph_host": "graph.microsoft.com",
        },
    )


def _token(emu: GraphEmulator, request: Request, key: str) -> Response:
    tenant = emu.find_tenant(key)
    if tenant is None:
        return _unknown_tenant(key)
    form = dict(parse_qsl(request.body.decode("utf-8", "replace")))
    if form.get("grant_type") != "client_credentials":
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type; the emulator supports "
            "'client_credentials' only.",
        )
    token_url = f"{request.base_url}/{tenant.id}/oauth2/v2.0/token"
    problem = _check_client(tenant, form, token_url)
    if problem is not None:
        return problem
    scope = form.get("scope", "")
    if not scope.endswith("/.default") or " " in scope:
        return entra_error(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    ttl = emu.faults.token_ttl
    token = emu.grants.issue(tenant.id, form["client_id"], ttl)
    body = {"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": token}
    return json_response(200, body)


def _check_client(tenant: Tenant, form: dict[str, str], token_url: str) -> Response | None:
    client_id = form.get("client_id", "")
    app = tenant.app(client_id)
    if app is None:
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{tenant.name}'. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant. You may have "
            "sent your authentication request to the wrong tenant.",
        )
    if form.get("client_assertion_type") == ASSERTION_TYPE and "client_assertion" in form:
        return check_assertion(form["client_assertion"], app.certificate, client_id, token_url)
    if "client_secret" not in form:
        return entra_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )
    if not secrets.compare_digest(form["client_secret"], app.secret):
        return entra_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the "
            f"client secret value, not the client secret ID, for a secret added to app "
            f"'{client_id}'.",
        )
    return None
