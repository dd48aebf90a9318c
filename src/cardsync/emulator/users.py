"""The user object: Graph's property set, defaults, validation and JSON views.

A :class:`UserRecord` is immutable; every change replaces it. It stores only the properties
that were set, plus the change sequence numbers users/delta needs to decide what changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

ACTIVE, SOFT_DELETED, HARD_DELETED = "active", "softDeleted", "hardDeleted"

# Writable properties and what Graph answers when they were never set.
USER_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "accountEnabled": True,
        "businessPhones": (),
        "city": None,
        "companyName": None,
        "country": None,
        "department": None,
        "displayName": None,
        "employeeId": None,
        "givenName": None,
        "jobTitle": None,
        "mail": None,
        "mailNickname": None,
        "mobilePhone": None,
        "officeLocation": None,
        "otherMails": (),
        "postalCode": None,
        "preferredLanguage": None,
        "state": None,
        "streetAddress": None,
        "surname": None,
        "usageLocation": None,
        "userPrincipalName": None,
        "userType": "Member",
    }
)
READ_ONLY = frozenset({"id", "createdDateTime", "deletedDateTime"})
USER_PROPERTIES = frozenset(USER_DEFAULTS) | READ_ONLY
LIST_PROPERTIES = frozenset(k for k, v in USER_DEFAULTS.items() if v == ())

# What Graph returns for a user when the request has no $select.
DEFAULT_SELECT: tuple[str, ...] = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)

_NO_SEQS: Mapping[str, int] = MappingProxyType({})


def clean_properties(props: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """Validate property names and freeze list values (tuples, so records stay immutable)."""
    unknown = props.keys() - USER_PROPERTIES
    if unknown:
        raise ValueError(f"unknown user properties: {', '.join(sorted(unknown))}")
    fixed = props.keys() & (READ_ONLY - {"id"} if creating else READ_ONLY)
    if fixed:
        raise ValueError(f"read-only user properties: {', '.join(sorted(fixed))}")
    cleaned = dict(props)
    for name in LIST_PROPERTIES & cleaned.keys():
        cleaned[name] = tuple(cleaned[name] or ())
    if "accountEnabled" in cleaned and not isinstance(cleaned["accountEnabled"], bool):
        raise ValueError("accountEnabled must be a bool")
    if (creating or "userPrincipalName" in cleaned) and not cleaned.get("userPrincipalName"):
        raise ValueError("userPrincipalName is required")
    return cleaned


def check_select(select: Iterable[str]) -> None:
    """Graph rejects unknown properties in ``$select`` with this message."""
    for name in select:
        if name not in USER_PROPERTIES:
            raise ValueError(
                f"Could not find a property named '{name}' on type 'microsoft.graph.user'."
            )


@dataclass(frozen=True)
class UserRecord:
    id: str
    props: Mapping[str, Any]
    created: str
    lifecycle_seq: int  # change seq of the creation, deletion or restore
    state: str = ACTIVE
    deleted: str | None = None
    # Change seq of each property updated after creation; absent means "as created".
    prop_seqs: Mapping[str, int] = field(default_factory=lambda: _NO_SEQS)

    @property
    def upn(self) -> str:
        return str(self.props["userPrincipalName"])

    def value(self, name: str) -> Any:
        if name == "id":
            return self.id
        if name == "createdDateTime":
            return self.created
        if name == "deletedDateTime":
            return self.deleted
        return self.props.get(name, USER_DEFAULTS[name])

    def changed_since(self, name: str, seq: int) -> bool:
        return self.lifecycle_seq > seq or self.prop_seqs.get(name, 0) > seq

    def view(self, select: Iterable[str], changed_after: int | None = None) -> dict[str, Any]:
        """The JSON object Graph returns: ``id`` first, then the selected properties.

        With ``changed_after`` (``Prefer: return=minimal``) unchanged properties are left out.
        """
        out: dict[str, Any] = {"id": self.id}
        for name in select:
            if changed_after is None or self.changed_since(name, changed_after):
                out[name] = self.value(name)
        return out

    def updated(self, changes: Mapping[str, Any], seq: int) -> UserRecord:
        seqs = {**self.prop_seqs, **dict.fromkeys(changes, seq)}
        return replace(self, props={**self.props, **changes}, prop_seqs=seqs)
