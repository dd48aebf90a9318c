"""The pure planner: (directory mirror, cards ledger, rules) -> ordered actions.

No I/O happens here. Given the same rows and rules, :func:`plan` returns the same
actions, so a dry run is printing the plan and every rule has a small test.

Rules applied per user (each action carries the ``reason`` that caused it):

- permanently deleted in Entra ID (``@removed: deleted``, or gone after a full
  resync and not in deleted items) -> the card is deleted;
- soft-deleted (``@removed: changed``) or disabled -> the card is kept
  (``on_disable = "keep"``) or deactivated (``"deactivate"``); a user seen for the
  first time while disabled gets no card, as in Entra provisioning;
- present and enabled -> the card is created, reactivated or updated to match.

Actions are ordered delete, deactivate, update, reactivate, create (like ssosync:
removals first free anything a create might reuse).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import ClassVar

from .models import Card, Person
from .state import LedgerCard, MirrorUser


@dataclass(frozen=True, slots=True)
class OrgRules:
    """Everything the planner needs to know about one organization."""

    org: str
    card_key: bytes
    fingerprint: str
    on_disable: str = "keep"  # "keep" | "deactivate"


@dataclass(frozen=True, slots=True)
class Action:
    kind: ClassVar[str] = "action"
    order: ClassVar[int] = 9

    org: str
    user_id: str
    user_principal_name: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeleteCard(Action):
    kind: ClassVar[str] = "delete_card"
    order: ClassVar[int] = 0

    card_id: str = ""
    purge_user: bool = False  # also drop the mirror row (the user is gone for good)


@dataclass(frozen=True, slots=True)
class DeactivateCard(Action):
    kind: ClassVar[str] = "deactivate_card"
    order: ClassVar[int] = 1

    card: Card | None = None


@dataclass(frozen=True, slots=True)
class UpdateCard(Action):
    kind: ClassVar[str] = "update_card"
    order: ClassVar[int] = 2

    card: Card | None = None
    changed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReactivateCard(Action):
    kind: ClassVar[str] = "reactivate_card"
    order: ClassVar[int] = 3

    card: Card | None = None


@dataclass(frozen=True, slots=True)
class CreateCard(Action):
    kind: ClassVar[str] = "create_card"
    order: ClassVar[int] = 4

    card: Card | None = None


def card_id_for(card_key: bytes, user_id: str) -> str:
    """A stable, opaque card id: HMAC of the Entra object id under a per-install key.

    80 bits of base32, lower case: safe in URLs and file names, and not derivable
    from a name or an object id without the key, so cards cannot be enumerated."""
    digest = hmac.new(card_key, user_id.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def changed_fields(old: Person, new: Person) -> tuple[str, ...]:
    return tuple(f.name for f in fields(Person) if getattr(old, f.name) != getattr(new, f.name))


def plan_user(
    rules: OrgRules, user: MirrorUser | None, card: LedgerCard | None
) -> Action | None:
    """The one action (or none) that brings this user's card in line with the rules."""
    if user is None:
        if card is None:
            return None
        return DeleteCard(
            rules.org, card.user_id, card.person.user_principal_name,
            "user is no longer in the directory mirror", card.card_id, False,
        )
    upn = user.person.user_principal_name
    if user.removed == "deleted":
        if card is None:
            return None
        return DeleteCard(
            rules.org, user.id, upn, "permanently deleted in Entra ID", card.card_id, True
        )
    if user.removed is not None or not user.account_enabled:
        why = "soft-deleted in Entra ID" if user.removed else "disabled in Entra ID"
        if card is None or not card.active or rules.on_disable == "keep":
            return None
        return DeactivateCard(
            rules.org, user.id, upn, f"{why} (on_disable = deactivate)",
            _card(rules, user, active=False),
        )
    if card is None:
        return CreateCard(rules.org, user.id, upn, "new user in Entra ID", _card(rules, user))
    if not card.active:
        return ReactivateCard(
            rules.org, user.id, upn, "enabled or restored in Entra ID", _card(rules, user)
        )
    if card.hash != user.hash:
        changed = changed_fields(card.person, user.person)
        return UpdateCard(
            rules.org, user.id, upn, "profile changed: " + ", ".join(changed),
            _card(rules, user), changed,
        )
    photo_etag = user.photo.etag if user.photo else None
    if card.photo_etag != photo_etag:
        what = "changed"
        if card.photo_etag is None or photo_etag is None:
            what = "added" if card.photo_etag is None else "removed"
        return UpdateCard(
            rules.org, user.id, upn, f"profile photo {what}", _card(rules, user), ("photo",)
        )
    if card.fingerprint != rules.fingerprint:
        return UpdateCard(
            rules.org, user.id, upn, "card template or site settings changed",
            _card(rules, user),
        )
    return None


def plan(
    rules: OrgRules, rows: Iterable[tuple[MirrorUser | None, LedgerCard | None]]
) -> list[Action]:
    """Plan every row and order the actions: delete, deactivate, update, reactivate, create."""
    actions = [a for user, card in rows if (a := plan_user(rules, user, card)) is not None]
    actions.sort(key=lambda a: a.order)
    return actions


def _card(rules: OrgRules, user: MirrorUser, active: bool = True) -> Card:
    return Card(
        org=rules.org,
        card_id=card_id_for(rules.card_key, user.id),
        user_id=user.id,
        person=user.person,
        active=active,
        photo=user.photo,
    )
