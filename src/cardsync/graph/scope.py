"""Graph reads for the sync scope: the enterprise application, its assignments, and the
membership of groups through groups/delta.

    GET /servicePrincipals?$filter=appId eq '{client id}'      -> the enterprise app's id
    GET /servicePrincipals/{id}/appRoleAssignedTo               -> who is assigned (no delta:
                                                                   polled every cycle)
    GET /groups/delta?$select=members&$filter=id eq '…' or …    -> members@delta of up to 50
                                                                   groups, then deltaLinks

The pure half (:func:`parse_assignments_page`, :func:`parse_group_delta_page`) reads raw
JSON like :mod:`.parse` does. :class:`ScopeReader` is the async half; it runs on the
event loop of the :class:`~cardsync.graph.source.GraphSource` that owns it, through the
same :meth:`GraphClient.get <cardsync.graph.client.GraphClient.get>` (auth, the SDK's
retries, the time-bounded retry loop, error mapping) as users/delta.

A 403 becomes a :class:`~cardsync.errors.ConsentError` naming the permission the read
needs (Microsoft's least privileged one, per learn.microsoft.com/graph/api/...):

- servicePrincipals and appRoleAssignedTo: Application.Read.All (or Directory.Read.All);
- groups/delta: GroupMember.Read.All (or Group.Read.All, Directory.Read.All).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import quote, urlsplit

from ..config import EntraConfig
from ..errors import ConsentError, DeltaExpiredError, GraphError
from .errors import same_origin, status_of

if TYPE_CHECKING:
    from .client import GraphClient

log = logging.getLogger("cardsync.graph")

MAX_GROUPS_PER_ROUND = 50  # Graph's limit for OR-ed `id eq` in a delta $filter
PAGE_SIZE = 999  # $top for appRoleAssignedTo and servicePrincipals (Graph's maximum)
USER_TYPE = "#microsoft.graph.user"
_ID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")

APP_PERMISSION_HINT = (
    "add the Microsoft Graph application permission Application.Read.All (or "
    "Directory.Read.All) to the app registration and grant admin consent: "
    'scope = "assigned" reads who is assigned to the enterprise application'
)
GROUP_PERMISSION_HINT = (
    "add the Microsoft Graph application permission GroupMember.Read.All (or "
    "Group.Read.All or Directory.Read.All) to the app registration and grant admin "
    'consent: scope = "assigned" and "groups" follow group membership'
)


@dataclass(frozen=True, slots=True)
class Assignment:
    """One appRoleAssignment of the enterprise application."""

    principal_id: str
    principal_type: str  # "User", "Group" or "ServicePrincipal"


@dataclass(frozen=True, slots=True)
class GroupChange:
    """One groups/delta entry for a group.

    ``added``: user members listed (all of them in a full round, the new ones in an
    incremental round); nested groups and other object types are left out, as Entra's
    provisioning does not expand them. ``removed``: ids of members that left (of any type).
    ``deleted``: the group itself was removed ("changed": soft-deleted, "deleted").
    A group with many members may come in several entries of one round.
    """

    group_id: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    deleted: str | None = None


@dataclass(frozen=True, slots=True)
class MembershipRound:
    """A whole groups/delta round for a set of groups."""

    changes: tuple[GroupChange, ...]
    delta_link: str
    full: bool  # True: started without a deltaLink (every member is listed)


# -- pure parsing ----------------------------------------------------------------------


def _document(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GraphError(f"Microsoft Graph sent a {what} page that is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise GraphError(f"Microsoft Graph sent a {what} page that is not a JSON object")
    values = doc.get("value")
    if values is not None and not isinstance(values, list):
        raise GraphError(f"Microsoft Graph sent a {what} page whose 'value' is not a list")
    return doc


def _values(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in doc.get("value") or () if isinstance(v, dict)]


def _link(doc: dict[str, Any], key: str, what: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise GraphError(f"Microsoft Graph sent a {what} link that is not a URL: {value!r:.60}")
    return value


def _is_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def parse_service_principals_page(raw: bytes | str) -> tuple[list[str], str | None]:
    """Ids of the service principals on a ``/servicePrincipals`` page, and the nextLink."""
    doc = _document(raw, "servicePrincipals")
    ids = [v["id"] for v in _values(doc) if _is_id(v.get("id"))]
    return ids, _link(doc, "@odata.nextLink", "servicePrincipals")


def parse_assignments_page(raw: bytes | str) -> tuple[list[Assignment], str | None]:
    """The assignments on an ``appRoleAssignedTo`` page, and the nextLink."""
    doc = _document(raw, "appRoleAssignedTo")
    found = [
        Assignment(v["principalId"], str(v.get("principalType") or ""))
        for v in _values(doc)
        if _is_id(v.get("principalId"))
    ]
    return found, _link(doc, "@odata.nextLink", "appRoleAssignedTo")


def parse_group_delta_page(raw: bytes | str) -> tuple[list[GroupChange], str | None, str | None]:
    """The entries of one groups/delta page, its nextLink and its deltaLink."""
    what = "groups/delta"
    doc = _document(raw, what)
    next_link = _link(doc, "@odata.nextLink", what)
    delta_link = _link(doc, "@odata.deltaLink", what)
    if next_link is None and delta_link is None:
        raise GraphError(
            "Microsoft Graph sent a groups/delta page with neither @odata.nextLink nor "
            "@odata.deltaLink, so the round cannot continue",
            "run again; if it persists, the response is not from Graph",
        )
    if next_link is not None:
        delta_link = None  # never both; saving a deltaLink early would lose the rest
    changes = [c for c in map(_group_change, _values(doc)) if c is not None]
    return changes, next_link, delta_link


def _group_change(obj: dict[str, Any]) -> GroupChange | None:
    gid = obj.get("id")
    if not _is_id(gid):
        return None
    removed = obj.get("@removed")
    if removed is not None:
        reason = removed.get("reason") if isinstance(removed, dict) else None
        return GroupChange(gid, deleted=reason if reason == "deleted" else "changed")
    added: list[str] = []
    gone: list[str] = []
    for member in obj.get("members@delta") or ():
        if not isinstance(member, dict) or not _is_id(member.get("id")):
            continue
        if member.get("@removed") is not None:
            gone.append(member["id"])  # any type: removing a row that never existed is harmless
        elif member.get("@odata.type") == USER_TYPE:
            added.append(member["id"])
    return GroupChange(gid, tuple(added), tuple(gone))


# -- the async reader --------------------------------------------------------------------


class ScopeReader:
    """Scope reads through one :class:`GraphClient`; call from its event loop only."""

    def __init__(self, client: GraphClient, entra: EntraConfig) -> None:
        self.client = client
        self.entra = entra
        self.page_size = PAGE_SIZE

    @property
    def _base(self) -> str:
        return self.entra.graph_url

    def first_groups_delta_url(self, group_ids: Sequence[str]) -> str:
        wanted = quote(" or ".join(f"id eq '{gid}'" for gid in group_ids), safe="'")
        return f"{self._base}/groups/delta?$select=members&$filter={wanted}"

    async def service_principal_id(self, app_id: str) -> str | None:
        """The object id of the service principal (enterprise application) of ``app_id``,
        or None when the tenant has none."""
        wanted = quote(f"appId eq '{app_id}'", safe="'")
        url: str | None = f"{self._base}/servicePrincipals?$filter={wanted}&$select=id"
        found: list[str] = []
        while url is not None:
            body = await self._get(url, "GET servicePrincipals", APP_PERMISSION_HINT)
            ids, url = parse_service_principals_page(body or b"{}")
            found += ids
        return found[0] if found else None

    async def app_assignments(self, sp_id: str) -> list[Assignment] | None:
        """Everyone assigned to the enterprise application ``sp_id``; None if Graph has
        no such service principal."""
        what = "GET servicePrincipals/{id}/appRoleAssignedTo"
        url: str | None = (
            f"{self._base}/servicePrincipals/{quote(sp_id, safe='')}/appRoleAssignedTo"
            f"?$top={self.page_size}"
        )
        found: list[Assignment] = []
        first = True
        while url is not None:
            body = await self._get(url, what, APP_PERMISSION_HINT, missing_ok=first)
            if body is None:
                return None
            page, url = parse_assignments_page(body)
            found += page
            first = False
        return found

    async def group_members_delta(
        self, group_ids: Sequence[str], link: str | None
    ) -> MembershipRound:
        """One whole groups/delta round with ``members``: from ``link`` (a stored
        deltaLink) or, when None, a full round for ``group_ids`` (at most 50).

        A stored link Graph no longer accepts (410, 400 such as ``syncStateNotFound``, or
        one for another endpoint) raises :class:`~cardsync.errors.DeltaExpiredError`; the
        caller then starts again with None.
        """
        if link is None:
            if not group_ids or len(group_ids) > MAX_GROUPS_PER_ROUND:
                raise ValueError(f"a groups/delta round takes 1 to {MAX_GROUPS_PER_ROUND} ids")
            url = self.first_groups_delta_url(group_ids)
        elif not self._is_groups_delta(link):
            raise DeltaExpiredError(
                f"the stored groups deltaLink is not a groups/delta link of {self._base}"
            )
        else:
            url = link
        changes: list[GroupChange] = []
        stored = link is not None
        while True:
            body = await self._delta_page(url, stored=stored)
            page, next_link, delta_link = parse_group_delta_page(body)
            changes += page
            if delta_link is not None:
                return MembershipRound(tuple(changes), delta_link, full=link is None)
            assert next_link is not None
            if not self._is_groups_delta(next_link):
                raise GraphError(
                    f"Microsoft Graph sent a groups/delta link to another endpoint "
                    f"({next_link:.80})"
                )
            url, stored = next_link, False

    async def _delta_page(self, url: str, *, stored: bool) -> bytes:
        try:
            body = await self._get(url, "GET groups/delta", GROUP_PERMISSION_HINT)
        except GraphError as exc:
            cause = exc.__cause__
            unreadable = cause is not None and status_of(cause) == 400
            if stored and unreadable and not isinstance(exc, DeltaExpiredError):
                # A stored link Graph cannot read (garbled, another tenant's): a full
                # round heals it, and shows any other 400 on its own first request.
                raise DeltaExpiredError(
                    f"Microsoft Graph rejected the stored groups deltaLink: {exc.message}"
                ) from cause
            raise
        if not body:
            raise GraphError("Microsoft Graph sent an empty groups/delta page")
        return body

    async def _get(
        self, url: str, what: str, hint: str, *, missing_ok: bool = False
    ) -> bytes | None:
        if not same_origin(url, self._base):
            # Following it would send our bearer token to another host.
            raise GraphError(f"Microsoft Graph sent a link to another host ({url:.80})")
        from .source import _get_request

        try:
            return await self.client.get(lambda: _get_request(url), what, missing_ok=missing_ok)
        except ConsentError as exc:
            detail = exc.message.partition(f"403 Forbidden to {what}")[2]  # " (code: text)"
            raise ConsentError(
                f"app {self.entra.client_id} may not read the sync scope in tenant "
                f"{self.entra.tenant_id}: Microsoft Graph answered 403 Forbidden to "
                f"{what}{detail}",
                hint,
            ) from (exc.__cause__ or exc)

    def _is_groups_delta(self, url: str) -> bool:
        prefix = urlsplit(self._base).path.rstrip("/").lower() + "/groups/delta"
        return same_origin(url, self._base) and urlsplit(url).path.lower().startswith(prefix)


__all__ = [
    "MAX_GROUPS_PER_ROUND",
    "Assignment",
    "GroupChange",
    "MembershipRound",
    "ScopeReader",
    "parse_assignments_page",
    "parse_group_delta_page",
    "parse_service_principals_page",
]
