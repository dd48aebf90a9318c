"""Groups, memberships and app role assignments: what "assigned users and groups" scope reads.

Membership changes go to their own append-only log as ``(group id, member id)``; creating a
group logs ``(group id, None)``. groups/delta turns a log slice into ``members@delta``: a
touched member that is still a member was added, otherwise removed. Soft-deleted users keep
their memberships (as in Entra); hard-deleting a user removes them everywhere.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .wire import utc_now

if TYPE_CHECKING:
    from .directory import App, Tenant

# The default app role: assigned "to the app" without a specific role.
DEFAULT_APP_ROLE = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class GroupRecord:
    id: str
    display_name: str
    created: str
    members: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Assignment:
    """An appRoleAssignment of a user or group to an app's service principal."""

    id: str
    principal_id: str
    principal_type: str  # "User" or "Group"
    principal_display_name: str
    resource_id: str
    resource_display_name: str
    created: str
    app_role_id: str = DEFAULT_APP_ROLE


class GroupDirectory:
    """The groups part of a :class:`~.directory.Tenant`; it shares the tenant's lock."""

    def __init__(self, tenant: Tenant) -> None:
        self._tenant = tenant
        self._groups: dict[str, GroupRecord] = {}
        self._order: list[str] = []
        self._log: list[tuple[str, str | None]] = []
        self._assigned: dict[str, dict[str, Assignment]] = {}  # sp id -> principal -> it

    # -- writes -------------------------------------------------------------------------

    def add(self, display_name: str) -> str:
        gid = str(uuid.uuid4())
        with self._tenant.lock:
            self._groups[gid] = GroupRecord(gid, display_name, utc_now())
            self._order.append(gid)
            self._log.append((gid, None))
        return gid

    def add_member(self, gid: str, member_id: str) -> None:
        """Add a user or a group (nested groups are not expanded by scope)."""
        with self._tenant.lock:
            group = self._require(gid)
            self._principal_type(member_id)
            if member_id not in group.members:
                self._groups[gid] = replace(group, members=group.members | {member_id})
                self._log.append((gid, member_id))

    def remove_member(self, gid: str, member_id: str) -> None:
        with self._tenant.lock:
            group = self._require(gid)
            if member_id not in group.members:
                raise KeyError(f"{member_id} is not a member of group {gid}")
            self._groups[gid] = replace(group, members=group.members - {member_id})
            self._log.append((gid, member_id))

    def forget(self, uid: str) -> None:
        """A hard-deleted user leaves every group and loses its assignments."""
        with self._tenant.lock:
            for gid, group in list(self._groups.items()):
                if uid in group.members:
                    self.remove_member(gid, uid)
            for assignments in self._assigned.values():
                assignments.pop(uid, None)

    def assign(self, app: App, principal_id: str) -> str:
        """Assign a user or group to ``app``. Returns the assignment id."""
        with self._tenant.lock:
            kind = self._principal_type(principal_id)
            assignments = self._assigned.setdefault(app.service_principal_id, {})
            if principal_id not in assignments:
                assignments[principal_id] = Assignment(
                    str(uuid.uuid4()),
                    principal_id,
                    kind,
                    self._display_name(principal_id),
                    app.service_principal_id,
                    app.display_name,
                    utc_now(),
                )
            return assignments[principal_id].id

    def unassign(self, app: App, principal_id: str) -> None:
        with self._tenant.lock:
            assignments = self._assigned.get(app.service_principal_id, {})
            if assignments.pop(principal_id, None) is None:
                raise KeyError(f"{principal_id} is not assigned to {app.client_id}")

    def _require(self, gid: str) -> GroupRecord:
        group = self._groups.get(gid)
        if group is None:
            raise KeyError(f"group {gid} not found")
        return group

    def _principal_type(self, principal_id: str) -> str:
        if principal_id in self._groups:
            return "Group"
        if self._tenant.user(principal_id) is not None:
            return "User"
        raise KeyError(f"no user or group {principal_id}")

    def _display_name(self, principal_id: str) -> str:
        if principal_id in self._groups:
            return self._groups[principal_id].display_name
        user = self._tenant.user(principal_id) or {}
        return str(user.get("displayName") or "")

    # -- reads --------------------------------------------------------------------------

    def record(self, gid: str) -> GroupRecord | None:
        return self._groups.get(gid)

    def is_group(self, object_id: str) -> bool:
        return object_id in self._groups

    @property
    def change_seq(self) -> int:
        return len(self._log)

    @property
    def creation_order(self) -> list[str]:
        return self._order

    def changes(self, since: int, until: int) -> dict[str, frozenset[str] | None]:
        """Group id -> member ids touched in ``(since, until]``; ``None`` if the group
        itself was created then (its whole membership is news)."""
        touched: dict[str, set[str] | None] = {}
        with self._tenant.lock:
            for gid, member in self._log[since:until]:
                current = touched.get(gid, set())
                if member is None or current is None:
                    touched[gid] = None
                else:
                    touched[gid] = current | {member}
        return {g: (None if m is None else frozenset(m)) for g, m in touched.items()}

    def assignments(self, sp_id: str) -> list[Assignment]:
        with self._tenant.lock:
            return list(self._assigned.get(sp_id, {}).values())
