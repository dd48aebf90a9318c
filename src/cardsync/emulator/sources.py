"""The two delta resources, users and groups, as :class:`~.delta.DeltaSource` objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .directory import Tenant
from .groups import GroupRecord
from .users import ACTIVE, DEFAULT_SELECT, SOFT_DELETED, check_select

# A soft delete is "changed" (restorable for 30 days), a hard delete is "deleted".
_REMOVED_REASON = {SOFT_DELETED: "changed"}
GROUP_PROPERTIES = frozenset({"id", "displayName", "members"})


def member_ref(tenant: Tenant, oid: str, removed: bool = False) -> dict[str, Any]:
    kind = "group" if tenant.groups.is_group(oid) else "user"
    ref: dict[str, Any] = {"@odata.type": f"#microsoft.graph.{kind}", "id": oid}
    if removed:
        ref["@removed"] = {"reason": "deleted"}
    return ref


class UserDelta:
    resource = "users"
    default_select = DEFAULT_SELECT

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant

    def check_select(self, select: Sequence[str]) -> None:
        check_select(select)

    def bounds(self) -> tuple[int, int]:
        with self.tenant.lock:
            return self.tenant.change_seq, len(self.tenant.creation_order)

    def creation_order(self) -> Sequence[str]:
        return self.tenant.creation_order

    def current(self, oid: str, select: Sequence[str]) -> dict[str, Any] | None:
        record = self.tenant.record(oid)
        return record.view(select) if record and record.state == ACTIVE else None

    def changed(self, since: int, until: int, select: Sequence[str]) -> Sequence[str]:
        return self.tenant.changed_user_ids(since, until, frozenset(select))

    def change(
        self, oid: str, select: Sequence[str], since: int, until: int, minimal: bool
    ) -> dict[str, Any]:
        record = self.tenant.record(oid)
        assert record is not None  # ids come from the change log, and records stay
        if record.state == ACTIVE:
            return record.view(select, since if minimal else None)
        return {"id": oid, "@removed": {"reason": _REMOVED_REASON.get(record.state, "deleted")}}


class GroupDelta:
    """groups/delta. Members show up as ``members@delta`` only when ``members`` is selected."""

    resource = "groups"
    default_select: tuple[str, ...] = ("displayName",)

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self._changes: dict[tuple[int, int], dict[str, frozenset[str] | None]] = {}

    def check_select(self, select: Sequence[str]) -> None:
        for name in select:
            if name not in GROUP_PROPERTIES:
                raise ValueError(
                    f"Could not find a property named '{name}' on type 'microsoft.graph.group'."
                )

    def bounds(self) -> tuple[int, int]:
        with self.tenant.lock:
            groups = self.tenant.groups
            return groups.change_seq, len(groups.creation_order)

    def creation_order(self) -> Sequence[str]:
        return self.tenant.groups.creation_order

    def current(self, oid: str, select: Sequence[str]) -> dict[str, Any] | None:
        group = self._group(oid)
        return self._view(group, select, group.members, frozenset())

    def changed(self, since: int, until: int, select: Sequence[str]) -> Sequence[str]:
        return list(self._touched(since, until))

    def change(
        self, oid: str, select: Sequence[str], since: int, until: int, minimal: bool
    ) -> dict[str, Any]:
        group = self._group(oid)
        touched = self._touched(since, until)[oid]
        if touched is None:  # created in this round: every member is news
            return self._view(group, select, group.members, frozenset())
        return self._view(group, select, group.members & touched, touched - group.members)

    def _group(self, gid: str) -> GroupRecord:
        group = self.tenant.groups.record(gid)
        assert group is not None  # groups are never deleted in the emulator
        return group

    def _touched(self, since: int, until: int) -> dict[str, frozenset[str] | None]:
        # One source serves one request; the dict is reused for all entries of the page.
        key = (since, until)
        if key not in self._changes:
            self._changes[key] = self.tenant.groups.changes(since, until)
        return self._changes[key]

    def _view(
        self,
        group: GroupRecord,
        select: Sequence[str],
        added: frozenset[str],
        removed: frozenset[str],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"id": group.id}
        if "displayName" in select:
            out["displayName"] = group.display_name
        if "members" in select:
            refs = [member_ref(self.tenant, m) for m in sorted(added)]
            refs += [member_ref(self.tenant, m, removed=True) for m in sorted(removed)]
            out["members@delta"] = refs
        return out
