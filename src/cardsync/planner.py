"""The pure planner: (directory mirror, cards ledger, members, rules) -> ordered actions.

No I/O happens here. Given the same rows and context, :func:`plan` returns the same
actions, so a dry run is printing the plan and every rule has a small test. Each
action carries the ``reason`` (the rule) that caused it. The rules, from the product
document (docs/lifecycle.md has them as a table):

- **Permanently deleted** in Entra ID (``@removed: deleted``, or gone after a full
  resync and not in deleted items): an ``entra``-origin user is removed with their
  card and the seat is freed (``delete_user``); an ``invited``-origin user loses only
  the card (``delete_card``). The owner and admins are never deleted by sync: that
  is held back (``hold``) until ownership is transferred.
- **Disabled, soft-deleted, out of scope, or a guest** (unless ``include_guests``):
  the card is kept (``on_disable = "keep"``) or deactivated (``"deactivate"``). A
  user who is inactive when first seen gets no card and no seat.
- **Active**: the card is created (taking a seat, or linking an invited user with
  the same mail), moved to the organization their mail domain belongs to (with
  domain assignment), reactivated (same card, same URL), or updated.
- **Seats**: new users beyond ``seats`` wait (``wait``) and are planned again next run.

Actions are ordered delete, deactivate, move, update, reactivate, create, then the
ones that are not applied (hold, wait): removals first free seats and names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import ClassVar

from .models import Card, Person
from .state import LedgerCard, Member, MirrorUser

PROTECTED_ROLES = ("owner", "admin")


@dataclass(frozen=True)
class PlanContext:
    """Everything the planner knows besides the rows: the organization being synced
    (``source``, whose integration brought the users) and the state of every
    organization a user may be routed to.

    ``members_by_user``, ``members_by_email`` and ``other_cards`` need only hold the
    entries of the users being planned (any organization): a big plan is made in
    chunks of rows, each with the members and cards its users have."""

    source: str
    card_key: bytes
    fingerprints: Mapping[str, str]  # org -> backend fingerprint
    on_disable: Mapping[str, str] = field(default_factory=dict)  # org -> keep | deactivate
    routes: Mapping[str, str] = field(default_factory=dict)  # mail domain -> org
    members_by_user: Mapping[tuple[str, str], Member] = field(default_factory=dict)
    members_by_email: Mapping[tuple[str, str], Member] = field(default_factory=dict)
    roles: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (org, email) -> role
    other_cards: frozenset[tuple[str, str]] = frozenset()  # (org, user) from other sources
    seats: Mapping[str, int | None] = field(default_factory=dict)  # org -> limit or None
    seats_used: Mapping[str, int] = field(default_factory=dict)

    def target(self, user: MirrorUser) -> str:
        """The organization a user belongs in: the one owning their mail domain
        (exact match: subdomains only when listed), else the source organization."""
        return self.routes.get(domain_of(email_of(user.person)), self.source)

    def member(self, org: str, user: MirrorUser) -> Member | None:
        return self.members_by_user.get((org, user.id)) or self.members_by_email.get(
            (org, email_of(user.person))
        )


def email_of(person: Person) -> str:
    return (person.mail or person.user_principal_name).strip().lower()


def domain_of(email: str) -> str:
    return email.rpartition("@")[2]


# -- actions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    kind: ClassVar[str] = "action"
    order: ClassVar[int] = 9
    destructive: ClassVar[bool] = False  # counts toward max_deletes
    applied: ClassVar[bool] = True  # False: shown in plans, never executed

    org: str  # the organization whose card or user the action touches
    user_id: str
    user_principal_name: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeleteUser(Action):
    """Remove an Entra-origin user from the organization (freeing the seat) and their card."""

    kind: ClassVar[str] = "delete_user"
    order: ClassVar[int] = 0
    destructive: ClassVar[bool] = True

    email: str = ""
    card_id: str | None = None
    purge_user: bool = True


@dataclass(frozen=True, slots=True)
class DeleteCard(Action):
    kind: ClassVar[str] = "delete_card"
    order: ClassVar[int] = 0
    destructive: ClassVar[bool] = True

    card_id: str = ""
    purge_user: bool = False  # also drop the mirror row (the user is gone for good)


@dataclass(frozen=True, slots=True)
class DeactivateCard(Action):
    kind: ClassVar[str] = "deactivate_card"
    order: ClassVar[int] = 1
    destructive: ClassVar[bool] = True

    card: Card | None = None


@dataclass(frozen=True, slots=True)
class MoveCard(Action):
    """Move a card to another organization (domain assignment): same id, new place."""

    kind: ClassVar[str] = "move_card"
    order: ClassVar[int] = 2

    card: Card | None = None
    from_org: str = ""
    new_member: str | None = None  # email of the member to create in the new org


@dataclass(frozen=True, slots=True)
class UpdateCard(Action):
    kind: ClassVar[str] = "update_card"
    order: ClassVar[int] = 3

    card: Card | None = None
    changed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReactivateCard(Action):
    kind: ClassVar[str] = "reactivate_card"
    order: ClassVar[int] = 4

    card: Card | None = None


@dataclass(frozen=True, slots=True)
class CreateCard(Action):
    kind: ClassVar[str] = "create_card"
    order: ClassVar[int] = 5

    card: Card | None = None
    new_member: str | None = None  # email: create an entra-origin member (takes a seat)
    link_member: str | None = None  # email: link the invited member to this Entra user


@dataclass(frozen=True, slots=True)
class Hold(Action):
    """A change that sync will not make on its own (owner/admin protection)."""

    kind: ClassVar[str] = "hold"
    order: ClassVar[int] = 6
    applied: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Wait(Action):
    """A new user who waits for a free seat; planned again every run."""

    kind: ClassVar[str] = "wait"
    order: ClassVar[int] = 7
    applied: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """What a run reports about an action, without the card's content: a plan of a
    whole tenant is reported without holding every card in memory."""

    kind: str
    org: str
    user_id: str
    user_principal_name: str
    reason: str
    destructive: bool = False
    applied: bool = True
    card_id: str | None = None
    display_name: str | None = None
    changed: tuple[str, ...] = ()
    from_org: str | None = None


def record(action: Action) -> ActionRecord:
    card: Card | None = getattr(action, "card", None)
    return ActionRecord(
        kind=action.kind,
        org=action.org,
        user_id=action.user_id,
        user_principal_name=action.user_principal_name,
        reason=action.reason,
        destructive=action.destructive,
        applied=action.applied,
        card_id=card.card_id if card is not None else getattr(action, "card_id", None) or None,
        display_name=card.person.name if card is not None else None,
        changed=getattr(action, "changed", ()),
        from_org=getattr(action, "from_org", None) or None,
    )


def card_id_for(card_key: bytes, user_id: str) -> str:
    """A stable, opaque card id: HMAC of the Entra object id under a per-install key.

    80 bits of base32, lower case: safe in URLs and file names, and not derivable
    from a name or an object id without the key, so cards cannot be enumerated."""
    digest = hmac.new(card_key, user_id.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def changed_fields(old: Person, new: Person) -> tuple[str, ...]:
    return tuple(f.name for f in fields(Person) if getattr(old, f.name) != getattr(new, f.name))


# -- the rules -------------------------------------------------------------------------


def plan_user(
    ctx: PlanContext, user: MirrorUser | None, card: LedgerCard | None
) -> Action | None:
    """The one action (or none) that brings this user in line with the rules.
    ``card`` is the card this organization's integration published for the user."""
    if user is None:
        if card is None:
            return None
        return DeleteCard(
            card.org, card.user_id, card.person.user_principal_name,
            "user is no longer in the directory mirror", card.card_id, False,
        )
    if user.removed == "deleted":
        return _permanently_deleted(ctx, user, card)
    inactive = _inactive_reason(user)
    if inactive is not None:
        if card is None or not card.active or ctx.on_disable.get(card.org, "keep") == "keep":
            return None
        return DeactivateCard(
            card.org, user.id, user.person.user_principal_name,
            f"{inactive} (on_disable = deactivate)", _card(ctx, user, card.org, active=False),
        )
    target = ctx.target(user)
    if card is not None and card.org != target:
        return _move(ctx, user, card, target)
    if card is None:
        return _create(ctx, user, target)
    return _refresh(ctx, user, card)


def _inactive_reason(user: MirrorUser) -> str | None:
    if user.removed is not None:
        return "soft-deleted in Entra ID"
    if not user.account_enabled:
        return "disabled in Entra ID"
    if not user.in_scope:
        if user.user_type.lower() == "guest":
            return "guest user (include_guests = false) or not in sync scope"
        return "not in sync scope (unassigned from the app or its groups)"
    return None


def _permanently_deleted(
    ctx: PlanContext, user: MirrorUser, card: LedgerCard | None
) -> Action | None:
    upn = user.person.user_principal_name
    org = card.org if card is not None else ctx.target(user)
    member = ctx.member(org, user)
    if member is not None:
        role = ctx.roles.get((org, member.email))
        if role in PROTECTED_ROLES:
            return Hold(
                org, user.id, upn,
                f"permanently deleted in Entra ID, but {member.email} is the organization's "
                f"{role}: transfer ownership first (cardsync org transfer-ownership "
                f"--org {org} --to EMAIL)",
            )
        if member.origin == "entra":
            return DeleteUser(
                org, user.id, upn,
                "permanently deleted in Entra ID: user and card removed, seat freed",
                member.email, card.card_id if card else None, True,
            )
    if card is None:
        return None
    why = "permanently deleted in Entra ID"
    if member is not None:
        why += ": card removed; the invited user stays until removed by hand"
    return DeleteCard(org, user.id, upn, why, card.card_id, True)


def _move(ctx: PlanContext, user: MirrorUser, card: LedgerCard, target: str) -> Action:
    upn = user.person.user_principal_name
    if (target, user.id) in ctx.other_cards:
        return DeleteCard(
            card.org, user.id, upn,
            f"mail domain belongs to {target}, which already has this user's card",
            card.card_id, False,
        )
    new_member = None if ctx.member(target, user) else email_of(user.person)
    return MoveCard(
        target, user.id, upn,
        f"mail domain {domain_of(email_of(user.person))} belongs to organization {target}",
        _card(ctx, user, target), card.org, new_member,
    )


def _create(ctx: PlanContext, user: MirrorUser, target: str) -> Action | None:
    upn = user.person.user_principal_name
    if (target, user.id) in ctx.other_cards:
        return None  # another integration already gave this user a card there
    member = ctx.member(target, user)
    card = _card(ctx, user, target)
    routed = "" if target == ctx.source else f" (mail domain belongs to {target})"
    if member is None:
        return CreateCard(
            target, user.id, upn, "new user in Entra ID" + routed, card,
            new_member=email_of(user.person),
        )
    if member.card_suppressed:
        return None
    if member.user_id is None:
        return CreateCard(
            target, user.id, upn,
            f"invited user {member.email} found in Entra ID: linked, card created",
            card, link_member=member.email,
        )
    return CreateCard(target, user.id, upn, "user has no card yet" + routed, card)


def _refresh(ctx: PlanContext, user: MirrorUser, card: LedgerCard) -> Action | None:
    upn = user.person.user_principal_name
    new = _card(ctx, user, card.org)
    if not card.active:
        return ReactivateCard(card.org, user.id, upn, "active in Entra ID again", new)
    if card.hash != user.hash:
        changed = changed_fields(card.person, user.person)
        # No card field changed: the user's directory record did in another way (how
        # Graph wrote it, or a row stored before by provisioning on demand). The card is
        # made again once, and the ledger then holds the new hash.
        reason = "profile changed: " + ", ".join(changed) if changed else "directory record changed"
        return UpdateCard(card.org, user.id, upn, reason, new, changed)
    photo_etag = user.photo.etag if user.photo else None
    if card.photo_etag != photo_etag:
        what = "changed"
        if card.photo_etag is None or photo_etag is None:
            what = "added" if card.photo_etag is None else "removed"
        return UpdateCard(card.org, user.id, upn, f"profile photo {what}", new, ("photo",))
    if card.fingerprint != ctx.fingerprints.get(card.org):
        return UpdateCard(card.org, user.id, upn, "card template or site settings changed", new)
    return None


def plan(
    ctx: PlanContext, rows: Iterable[tuple[MirrorUser | None, LedgerCard | None]]
) -> list[Action]:
    """Plan every row, apply the seat limits, and order the actions."""
    actions = [a for user, card in rows if (a := plan_user(ctx, user, card)) is not None]
    actions.sort(key=lambda a: a.order)
    return list(within_seats(ctx, actions, freed_seats(actions)))


def freed_seats(actions: Iterable[Action]) -> Counter[str]:
    """Seats the plan's deletions free, per organization."""
    return Counter(a.org for a in actions if isinstance(a, DeleteUser))


def within_seats(
    ctx: PlanContext, ordered: Iterable[Action], freed: Mapping[str, int]
) -> Iterator[Action]:
    """The actions, in their order, where new members beyond an organization's seats
    wait (after the others). ``freed``: the seats the plan's deletions free, counted
    beforehand, since deletions come first (:func:`freed_seats`). Streams: a plan
    kept on disk goes through without being held in memory."""
    free: dict[str, int] = {}
    for org, limit in ctx.seats.items():
        if limit is not None:
            free[org] = limit - ctx.seats_used.get(org, 0) + freed.get(org, 0)
    waiting: list[Action] = []
    for a in ordered:
        new_member = getattr(a, "new_member", None)
        if new_member and a.org in free:
            if free[a.org] <= 0:
                limit = ctx.seats[a.org]
                waiting.append(
                    Wait(a.org, a.user_id, a.user_principal_name,
                         f"seat limit reached ({limit}/{limit}): waiting for a free seat")
                )
                continue
            free[a.org] -= 1
        yield a
    yield from waiting


def _card(ctx: PlanContext, user: MirrorUser, org: str, active: bool = True) -> Card:
    return Card(
        org=org,
        card_id=card_id_for(ctx.card_key, user.id),
        user_id=user.id,
        person=user.person,
        active=active,
        photo=user.photo,
    )
