"""Microsoft Graph's routes under ``/v1.0``: auth, permissions, injected failures, resources.

:func:`route` answers one request for an authenticated app. Plain requests (:func:`handle`)
and ``$batch`` items (``batch.py``) both go through it, so an item behaves exactly like the
same request sent alone.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .delta import DeltaEndpoint, DeltaSource
from .directory import App, Photo, Tenant
from .faults import Failure
from .sources import GroupDelta, UserDelta, member_ref
from .users import ACTIVE, DEFAULT_SELECT, SOFT_DELETED, UserRecord, check_select
from .wire import GRAPH_JSON, Request, Response, graph_error, json_response

if TYPE_CHECKING:
    from .core import GraphEmulator

_DIRECTORY = frozenset({"Directory.Read.All", "Directory.ReadWrite.All"})
USER_READ = _DIRECTORY | {"User.Read.All", "User.ReadWrite.All"}
PHOTO_READ = USER_READ | {"ProfilePhoto.Read.All"}
GROUP_READ = _DIRECTORY | {"GroupMember.Read.All", "Group.Read.All", "Group.ReadWrite.All"}
APP_READ = _DIRECTORY | {"Application.Read.All", "Application.ReadWrite.All"}
LIST_PAGE = 100  # Graph's default page size for collections such as /members
_APP_ID_EQ = re.compile(r"\s*appId\s+eq\s+'([^']*)'\s*")


@dataclass(frozen=True)
class Caller:
    """The authenticated app and where it is: what every route needs."""

    emu: GraphEmulator
    tenant: Tenant
    app: App
    graph_url: str


def handle(emu: GraphEmulator, request: Request) -> Response:
    caller = authenticate(emu, request)
    if isinstance(caller, Response):
        return with_request_ids(caller, request)
    failure = emu.faults.failure_for(request.path)
    response = failed(failure, request) if failure else route(caller, request)
    return with_request_ids(response, request)


def with_request_ids(response: Response, request: Request) -> Response:
    ids = (
        ("request-id", request.request_id),
        ("client-request-id", request.client_request_id or request.request_id),
    )
    return replace(response, headers=response.headers + ids)


def authenticate(emu: GraphEmulator, request: Request) -> Caller | Response:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    grant = emu.grants.lookup(token) if scheme.lower() == "bearer" else None
    if not auth:
        message = "Access token is empty."
    elif grant is None:
        message = "Access token validation failure. Invalid audience."
    elif grant.expires_at <= time.time():
        message = "Lifetime validation failed, the token is expired."
    else:
        tenant = emu.tenant(grant.tenant_id)
        app = tenant.app(grant.client_id)
        assert app is not None  # grants are only issued to existing apps
        return Caller(emu, tenant, app, f"{request.base_url}/v1.0")
    challenge = (("WWW-Authenticate", 'Bearer realm="", error="invalid_token"'),)
    return graph_error(401, "InvalidAuthenticationToken", message, request, challenge)


def failed(failure: Failure, request: Request) -> Response:
    headers = (("Retry-After", str(failure.retry_after)),)
    return graph_error(failure.status, failure.code, failure.message, request, headers)


def route(caller: Caller, request: Request) -> Response:
    path = request.path.removeprefix("/v1.0")
    for pattern, roles, handler in _ROUTES:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        if request.method != "GET":
            return graph_error(405, "BadRequest", "The HTTP method is not allowed.", request)
        if roles.isdisjoint(caller.app.roles):
            message = "Insufficient privileges to complete the operation."
            return graph_error(403, "Authorization_RequestDenied", message, request)
        try:
            return handler(caller, request, *match.groups())
        except _Refused as refused:
            return refused.response
        except ValueError as exc:
            return graph_error(400, "BadRequest", str(exc), request)
    segment = path.strip("/").split("/")[0] or "v1.0"
    message = f"Resource not found for the segment '{segment}'."
    return graph_error(400, "BadRequest", message, request)


class _Refused(Exception):
    """Raised by a route handler to answer with an error response."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _not_found(request: Request, key: str) -> _Refused:
    message = (
        f"Resource '{key}' does not exist or one of its queried reference-property objects "
        "are not present."
    )
    return _Refused(graph_error(404, "Request_ResourceNotFound", message, request))


def _record(caller: Caller, request: Request, key: str, state: str = ACTIVE) -> UserRecord:
    record = caller.tenant.record(key)
    if record is None or record.state != state:
        raise _not_found(request, key)
    return record


def _select(request: Request) -> Sequence[str]:
    if "$select" not in request.query:
        return [p for p in DEFAULT_SELECT if p != "id"]
    select = [p.strip() for p in request.query["$select"].split(",") if p.strip()]
    check_select(select)
    return [p for p in select if p != "id"]


# -- users ---------------------------------------------------------------------------------


def _users_delta(caller: Caller, request: Request) -> Response:
    return _delta(caller, request, UserDelta(caller.tenant))


def _delta(caller: Caller, request: Request, source: DeltaSource) -> Response:
    emu, tenant = caller.emu, caller.tenant
    endpoint = DeltaEndpoint(source, tenant.id, emu.faults, emu.page_size, caller.graph_url)
    return endpoint.handle(request)


def _user(caller: Caller, request: Request, key: str) -> Response:
    record = _record(caller, request, key)
    body = {"@odata.context": f"{caller.graph_url}/$metadata#users/$entity"}
    body.update(record.view(_select(request)))
    return json_response(200, body, content_type=GRAPH_JSON)


def _deleted_item(caller: Caller, request: Request, key: str) -> Response:
    record = _record(caller, request, key, SOFT_DELETED)
    body = {
        "@odata.context": f"{caller.graph_url}/$metadata#directoryObjects/$entity",
        "@odata.type": "#microsoft.graph.user",
    }
    body.update(record.view([*_select(request), "deletedDateTime"]))
    return json_response(200, body, content_type=GRAPH_JSON)


def _find_photo(caller: Caller, request: Request, key: str) -> Photo:
    photo = caller.tenant.photo(_record(caller, request, key).id)
    if photo is None:
        message = (
            "Exception of type 'Microsoft.Fast.Profile.Core.Exception.ImageNotFoundException' "
            "was thrown."
        )
        raise _Refused(graph_error(404, "ImageNotFound", message, request))
    return photo


def _photo(caller: Caller, request: Request, key: str) -> Response:
    photo = _find_photo(caller, request, key)
    body = {
        "@odata.context": f"{caller.graph_url}/$metadata#users('{key}')/photo/$entity",
        "@odata.mediaContentType": photo.content_type,
        "@odata.mediaEtag": f'W/"{photo.etag}"',
        "id": "default",
        "height": photo.height,
        "width": photo.width,
    }
    return json_response(200, body, content_type=GRAPH_JSON)


def _photo_value(caller: Caller, request: Request, key: str) -> Response:
    photo = _find_photo(caller, request, key)
    return Response(200, photo.data, photo.content_type)


# -- groups and assignments (scope) --------------------------------------------------------


def _groups_delta(caller: Caller, request: Request) -> Response:
    return _delta(caller, request, GroupDelta(caller.tenant))


def _members(caller: Caller, request: Request, gid: str) -> Response:
    group = caller.tenant.groups.record(gid)
    if group is None:
        raise _not_found(request, gid)
    select = _select(request)
    items = []
    for oid in sorted(group.members):
        if caller.tenant.groups.is_group(oid):
            member = caller.tenant.groups.record(oid)
            assert member is not None
            items.append({**member_ref(caller.tenant, oid), "displayName": member.display_name})
            continue
        record = caller.tenant.record(oid)
        if record is not None and record.state == ACTIVE:  # soft-deleted members are hidden
            items.append({"@odata.type": "#microsoft.graph.user", **record.view(select)})
    return _paged(caller, request, items)


def _service_principals(caller: Caller, request: Request) -> Response:
    text = request.query.get("$filter", "")
    match = _APP_ID_EQ.fullmatch(text)
    if text and match is None:
        raise ValueError("Unsupported query: only $filter=appId eq '…' is emulated.")
    apps = [a for a in caller.tenant.apps() if match is None or a.client_id == match.group(1)]
    return _paged(caller, request, [_service_principal(a) for a in apps])


def _service_principal(app: App) -> dict[str, Any]:
    return {
        "id": app.service_principal_id,
        "appId": app.client_id,
        "displayName": app.display_name,
        "servicePrincipalType": "Application",
        "accountEnabled": True,
    }


def _assigned_to(caller: Caller, request: Request, sp_id: str) -> Response:
    if caller.tenant.app_by_service_principal(sp_id) is None:
        raise _not_found(request, sp_id)
    items = [
        {
            "id": a.id,
            "appRoleId": a.app_role_id,
            "createdDateTime": a.created,
            "deletedDateTime": None,
            "principalDisplayName": a.principal_display_name,
            "principalId": a.principal_id,
            "principalType": a.principal_type,
            "resourceDisplayName": a.resource_display_name,
            "resourceId": a.resource_id,
        }
        for a in caller.tenant.groups.assignments(sp_id)
    ]
    return _paged(caller, request, items)


def _paged(caller: Caller, request: Request, items: list[dict[str, Any]]) -> Response:
    """A collection page: ``$top`` (default 100, at most 999) and an offset ``$skiptoken``."""
    query = request.query
    top = min(int(query.get("$top", LIST_PAGE)), 999)
    offset = _offset(query["$skiptoken"]) if "$skiptoken" in query else 0
    body: dict[str, Any] = {"value": items[offset : offset + top]}
    if offset + top < len(items):
        token = base64.urlsafe_b64encode(json.dumps({"offset": offset + top}).encode()).decode()
        here = caller.graph_url + request.path.removeprefix("/v1.0")
        body["@odata.nextLink"] = f"{here}?$top={top}&$skiptoken={token}"
    return json_response(200, body, content_type=GRAPH_JSON)


def _offset(token: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token))["offset"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError("Badly formed token.") from exc


Handler = Callable[..., Response]
_ROUTES: tuple[tuple[re.Pattern[str], frozenset[str], Handler], ...] = (
    # Graph names delta functions both "delta" and "delta()"; the SDK sends the latter.
    (re.compile(r"/users/delta(?:\(\))?"), USER_READ, _users_delta),
    (re.compile(r"/users/([^/]+)"), USER_READ, _user),
    (re.compile(r"/users/([^/]+)/photo"), PHOTO_READ, _photo),
    (re.compile(r"/users/([^/]+)/photo/\$value"), PHOTO_READ, _photo_value),
    (re.compile(r"/directory/deletedItems/([^/]+)"), USER_READ, _deleted_item),
    (re.compile(r"/groups/delta(?:\(\))?"), GROUP_READ, _groups_delta),
    (re.compile(r"/groups/([^/]+)/members"), GROUP_READ, _members),
    (re.compile(r"/servicePrincipals"), APP_READ, _service_principals),
    (re.compile(r"/servicePrincipals/([^/]+)/appRoleAssignedTo"), APP_READ, _assigned_to),
)
