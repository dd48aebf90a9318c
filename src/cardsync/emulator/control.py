"""The ``/_emulator/`` control API: drive the emulator process from another process.

It acts on the first tenant (the one ``python -m cardsync.emulator`` prints) and its first
app. There is no authentication, so it answers loopback clients only.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .wire import Request, Response, json_response

if TYPE_CHECKING:
    from .core import GraphEmulator
    from .directory import Tenant

PREFIX = "/_emulator"
_NO_CONTENT = Response(204)
_FAULT_SETTINGS = ("duplicate_entries", "empty_pages", "page_delay", "delta_link_ttl", "token_ttl")
_FAULT_CALLS = ("throttle", "fail_next")


def handle(emu: GraphEmulator, request: Request) -> Response:
    if not ipaddress.ip_address(request.peer).is_loopback:
        return _error(403, "the control API answers loopback clients only")
    path = request.path.removeprefix(PREFIX)
    for method, pattern, action in _ACTIONS:
        match = pattern.fullmatch(path)
        if match and request.method == method:
            try:
                return action(emu, request, *match.groups())
            except KeyError as exc:
                return _error(404, str(exc.args[0]) if exc.args else "not found")
            except (ValueError, TypeError) as exc:
                return _error(400, str(exc))
    return _error(404, f"no control action {request.method} {request.path}")


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def _json(request: Request) -> Any:
    try:
        return json.loads(request.body or b"null")
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from exc


def _tenant(emu: GraphEmulator) -> Tenant:
    return emu.default_tenant


# -- users ---------------------------------------------------------------------------------


def _list_users(emu: GraphEmulator, request: Request) -> Response:
    return json_response(200, _tenant(emu).user_ids())


def _add_users(emu: GraphEmulator, request: Request) -> Response:
    users = _json(request)
    if not isinstance(users, list) or not all(isinstance(u, dict) for u in users):
        raise ValueError("send a JSON list of user objects")
    return json_response(201, _tenant(emu).add_users(users))


def _get_user(emu: GraphEmulator, request: Request, uid: str) -> Response:
    user = _tenant(emu).user(uid)
    if user is None:
        raise KeyError(f"user {uid} not found")
    return json_response(200, user)


def _patch_user(emu: GraphEmulator, request: Request, uid: str) -> Response:
    changes = _json(request)
    if not isinstance(changes, dict):
        raise ValueError("send a JSON object of properties")
    _tenant(emu).update_user(uid, **changes)
    return _NO_CONTENT


def _lifecycle(emu: GraphEmulator, request: Request, uid: str, action: str) -> Response:
    tenant = _tenant(emu)
    steps: dict[str, Callable[[str], None]] = {
        "soft-delete": tenant.soft_delete,
        "restore": tenant.restore,
        "hard-delete": tenant.hard_delete,
    }
    steps[action](uid)
    return _NO_CONTENT


def _put_photo(emu: GraphEmulator, request: Request, uid: str) -> Response:
    _tenant(emu).set_photo(uid, request.body)
    return _NO_CONTENT


def _delete_photo(emu: GraphEmulator, request: Request, uid: str) -> Response:
    _tenant(emu).set_photo(uid, None)
    return _NO_CONTENT


# -- groups and assignments ----------------------------------------------------------------


def _add_group(emu: GraphEmulator, request: Request) -> Response:
    name = (_json(request) or {}).get("displayName")
    if not isinstance(name, str) or not name:
        raise ValueError('send {"displayName": "..."}')
    return json_response(201, {"id": _tenant(emu).add_group(name)})


def _add_member(emu: GraphEmulator, request: Request, gid: str, member: str) -> Response:
    _tenant(emu).add_member(gid, member)
    return _NO_CONTENT


def _remove_member(emu: GraphEmulator, request: Request, gid: str, member: str) -> Response:
    _tenant(emu).remove_member(gid, member)
    return _NO_CONTENT


def _assign(emu: GraphEmulator, request: Request, principal: str) -> Response:
    tenant = _tenant(emu)
    return json_response(201, {"id": tenant.assign(tenant.apps()[0], principal)})


def _unassign(emu: GraphEmulator, request: Request, principal: str) -> Response:
    tenant = _tenant(emu)
    tenant.unassign(tenant.apps()[0], principal)
    return _NO_CONTENT


# -- faults and the request log ------------------------------------------------------------


def _set_faults(emu: GraphEmulator, request: Request) -> Response:
    """Apply ``clear`` first, then settings, then ``throttle`` / ``fail_next`` (keyword
    objects) and ``expire_delta_links`` (a mode string)."""
    settings = _json(request)
    if not isinstance(settings, dict):
        raise ValueError("send a JSON object of fault settings")
    known = {"clear", "expire_delta_links", *_FAULT_SETTINGS, *_FAULT_CALLS}
    unknown = settings.keys() - known
    if unknown:
        raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
    faults = emu.faults
    if settings.get("clear"):
        faults.clear()
    for name in _FAULT_SETTINGS:
        if name in settings:
            setattr(faults, name, settings[name])
    for name in _FAULT_CALLS:
        if name in settings:
            getattr(faults, name)(**settings[name])
    if "expire_delta_links" in settings:
        faults.expire_delta_links(settings["expire_delta_links"])
    return _NO_CONTENT


def _get_requests(emu: GraphEmulator, request: Request) -> Response:
    return json_response(200, [asdict(r) for r in emu.requests])


def _clear_requests(emu: GraphEmulator, request: Request) -> Response:
    emu.clear_requests()
    return _NO_CONTENT


_ID = r"([^/]+)"
_ACTIONS: tuple[tuple[str, re.Pattern[str], Callable[..., Response]], ...] = tuple(
    (method, re.compile(pattern), action)
    for method, pattern, action in (
        ("GET", "/users", _list_users),
        ("POST", "/users", _add_users),
        ("GET", f"/users/{_ID}", _get_user),
        ("PATCH", f"/users/{_ID}", _patch_user),
        ("POST", f"/users/{_ID}/(soft-delete|restore|hard-delete)", _lifecycle),
        ("PUT", f"/users/{_ID}/photo", _put_photo),
        ("DELETE", f"/users/{_ID}/photo", _delete_photo),
        ("POST", "/groups", _add_group),
        ("PUT", f"/groups/{_ID}/members/{_ID}", _add_member),
        ("DELETE", f"/groups/{_ID}/members/{_ID}", _remove_member),
        ("PUT", f"/assignments/{_ID}", _assign),
        ("DELETE", f"/assignments/{_ID}", _unassign),
        ("POST", "/faults", _set_faults),
        ("GET", "/requests", _get_requests),
        ("DELETE", "/requests", _clear_requests),
    )
)
