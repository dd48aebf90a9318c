"""Operations an admin runs by hand, outside the sync cycle: inviting and removing
users, deleting cards, transferring ownership, and listing users.

They follow the product's rules on who may delete what: users and cards that Entra ID
manages are removed through Entra (the next sync does it), never by hand; invited
users and their cards are managed here. Every operation takes the run lock.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from .config import Config
from .errors import CardsyncError, UsageError
from .service import find_org, make_backend
from .state import State, lock_for, open_state

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
ENTRA_MANAGED_HINT = (
    "permanently delete the user in Entra ID and the next sync removes them and their card; "
    "disabling or unassigning them keeps the card (or deactivates it with "
    'on_disable = "deactivate")'
)


@contextlib.contextmanager
def _locked_state(config: Config) -> Iterator[State]:
    lock = lock_for(config.state.path)
    lock.acquire()
    try:
        state = open_state(config.state.path)
        try:
            with state.transaction():
                for org in config.organizations:
                    state.apply_people(org.slug, ((p.mail, p.role) for p in org.people))
            yield state
        finally:
            state.close()
    finally:
        lock.release()


def _email(value: str) -> str:
    email = value.strip().lower()
    if not _EMAIL.fullmatch(email):
        raise UsageError(f"{value!r} is not an email address", "give the user's mail address")
    return email


def invite(config: Config, slug: str, email_arg: str) -> dict[str, Any]:
    """Add an invited user: takes a seat now, gets a card once Entra ID knows them."""
    org, email = find_org(config, slug), _email(email_arg)
    with _locked_state(config) as state:
        existing = state.member(org.slug, email)
        if existing is not None and not existing.card_suppressed:
            raise UsageError(
                f"{email} is already a user of {org.slug} ({existing.origin})",
                "see `cardsync users list`",
            )
        with state.transaction():
            if existing is not None:  # re-inviting brings a hand-deleted card back
                state.suppress_card(org.slug, email, False)
            else:
                used = state.seats_used(org.slug)
                if org.seats is not None and used >= org.seats:
                    raise CardsyncError(
                        f"seat limit reached ({used}/{org.seats}) in {org.slug}",
                        "raise seats in the config, or remove a user first",
                    )
                state.add_member(org.slug, email, None, "invited")
    return {"org": org.slug, "email": email, "origin": "invited",
            "note": "the card is created at the next sync once Entra ID knows this mail"}


def remove_user(config: Config, slug: str, email_arg: str) -> dict[str, Any]:
    """Remove an invited user (and their card). Entra-managed users are refused."""
    org, email = find_org(config, slug), _email(email_arg)
    with _locked_state(config) as state:
        member = state.member(org.slug, email)
        if member is None:
            raise UsageError(f"{email} is not a user of {org.slug}", "see `cardsync users list`")
        if member.origin == "entra":
            raise CardsyncError(
                f"{email} was created by Entra ID sync and cannot be removed by hand",
                ENTRA_MANAGED_HINT,
            )
        if state.roles(org.slug).get((org.slug, email)) == "owner":
            raise CardsyncError(
                f"{email} is the owner of {org.slug}",
                f"transfer ownership first: cardsync org transfer-ownership --org {org.slug} "
                "--to EMAIL",
            )
        card = _card_of(state, org.slug, member.user_id)
        if card is not None:
            _remove_card(config, state, org.slug, card)
        with state.transaction():
            state.remove_member(org.slug, email)
    return {"org": org.slug, "email": email, "removed": True,
            "card_removed": card is not None}


def delete_card(config: Config, slug: str, who: str) -> dict[str, Any]:
    """Delete a card by hand: only cards of invited users; Entra-managed ones are refused."""
    org = find_org(config, slug)
    with _locked_state(config) as state:
        card = next(
            (c for c in state.cards(org.slug)
             if who.lower() in (c.user_id, c.card_id, c.person.email.lower(),
                                c.person.user_principal_name.lower())),
            None,
        )
        if card is None:
            raise UsageError(f"no card for {who!r} in {org.slug}", "see `cardsync cards list`")
        member = next((m for m in state.members(org.slug) if m.user_id == card.user_id), None)
        if member is None or member.origin == "entra":
            raise CardsyncError(
                f"the card of {card.person.email} is managed by Entra ID and cannot be deleted "
                "by hand",
                ENTRA_MANAGED_HINT,
            )
        _remove_card(config, state, org.slug, card)
        with state.transaction():
            state.suppress_card(org.slug, member.email, True)
    return {"org": org.slug, "email": member.email, "card_id": card.card_id, "deleted": True,
            "note": "the card stays deleted until the user is invited again"}


def transfer_ownership(config: Config, slug: str, to_arg: str) -> dict[str, Any]:
    """Make ``to`` the owner; the previous owner becomes an admin."""
    org, to = find_org(config, slug), _email(to_arg)
    with _locked_state(config) as state:
        if state.member(org.slug, to) is None:
            raise UsageError(
                f"{to} is not a user of {org.slug}",
                "ownership goes to an existing user: see `cardsync users list`",
            )
        previous = [e for (o, e), r in state.roles(org.slug).items() if r == "owner"]
        with state.transaction():
            for email in previous:
                state.set_role(org.slug, email, "admin")
            state.set_role(org.slug, to, "owner")
    return {"org": org.slug, "owner": to, "previous_owner": previous[0] if previous else None}


def list_users(config: Config, slug: str | None = None) -> list[dict[str, Any]]:
    """The ``users list --json`` document."""
    if slug is not None:
        find_org(config, slug)
    state = open_state(config.state.path)
    try:
        roles = state.roles()
        urls = {(c.org, c.user_id): c.url for c in state.cards(slug)}
        return [
            {
                "org": m.org,
                "user_id": m.user_id,
                "email": m.email,
                "origin": m.origin,
                "role": roles.get((m.org, m.email)),
                "card": urls.get((m.org, m.user_id)) if m.user_id else None,
            }
            for m in state.members(slug)
        ]
    finally:
        state.close()


def _card_of(state: State, org: str, user_id: str | None) -> Any:
    if user_id is None:
        return None
    return next((c for c in state.cards(org) if c.user_id == user_id), None)


def _remove_card(config: Config, state: State, org: str, card: Any) -> None:
    backend = make_backend(config)
    try:
        backend.remove(org, card.card_id)
        with state.transaction():
            state.forget_card(org, card.user_id)
        backend.finish(org, state.card_index(org))
    finally:
        backend.close()
