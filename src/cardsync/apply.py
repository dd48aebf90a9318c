"""Apply planned actions through a backend, recording each success as it happens.

A ledger row changes only after the backend call succeeded, in its own
transaction. A failure is recorded in the report and the action is simply planned
again on the next run; a crash between the backend call and the ledger write is
harmless because card ids are deterministic and backends adopt existing cards.
Actions that are not applied (``hold``, ``wait``) are skipped here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .backends import Backend
from .errors import BackendError, redact
from .models import Card
from .planner import (
    Action,
    CreateCard,
    DeactivateCard,
    DeleteCard,
    DeleteUser,
    MoveCard,
    ReactivateCard,
    UpdateCard,
)
from .state import State


@dataclass
class ApplyReport:
    done: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[Action, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return sum(self.done.values()) > 0


@dataclass(frozen=True)
class Applier:
    """Executes actions for the organization ``source`` (whose mirror rows they
    concern) through ``backend``, with the fingerprint of each target organization."""

    backend: Backend
    state: State
    source: str
    fingerprints: Mapping[str, str]

    def run(
        self, actions: Sequence[Action], on_step: Callable[[Action], None] | None = None
    ) -> ApplyReport:
        """Execute ``actions`` in order. Never raises for a single failed action."""
        report = ApplyReport()
        for action in actions:
            if not action.applied:
                continue
            try:
                self._execute(action)
            except (BackendError, OSError) as exc:
                report.failures.append((action, redact(str(exc))))
            else:
                report.done[action.kind] += 1
            if on_step is not None:
                on_step(action)
        return report

    def _execute(self, action: Action) -> None:
        state = self.state
        match action:
            case DeleteUser(org=org, user_id=user_id, email=email, card_id=card_id):
                if card_id:
                    self.backend.remove(org, card_id)
                with state.transaction():
                    state.forget_card(org, user_id)
                    state.remove_member(org, email)
                    state.purge_user(self.source, user_id)
            case DeleteCard(org=org, user_id=user_id, card_id=card_id, purge_user=purge):
                self.backend.remove(org, card_id)
                with state.transaction():
                    state.forget_card(org, user_id)
                    if purge:
                        state.purge_user(self.source, user_id)
            case MoveCard(card=card, from_org=from_org, new_member=new_member):
                assert card is not None
                self._publish(card, new_member=new_member, moved_from=from_org)
            case CreateCard(card=card, new_member=new_member, link_member=link):
                assert card is not None
                self._publish(card, new_member=new_member, link_member=link)
            case UpdateCard(card=card) | ReactivateCard(card=card) | DeactivateCard(card=card):
                assert card is not None
                self._publish(card)
            case _:
                raise TypeError(f"unknown action {action!r}")

    def _publish(
        self,
        card: Card,
        *,
        new_member: str | None = None,
        link_member: str | None = None,
        moved_from: str | None = None,
    ) -> None:
        published = self.backend.publish(card)
        if moved_from is not None:
            # The new card exists before the old one goes: a crash in between is
            # replanned as the same move, and both backend calls are idempotent.
            self.backend.remove(moved_from, card.card_id)
        state = self.state
        with state.transaction():
            if moved_from is not None:
                state.forget_card(moved_from, card.user_id)
                state.remove_entra_member_of(moved_from, card.user_id)
            state.record_card(
                card.org,
                card.user_id,
                card.card_id,
                published.url,
                card.person,
                self.fingerprints.get(card.org, ""),
                card.active,
                published.files,
                card.photo.etag if card.photo else None,
                source=self.source,
            )
            if new_member:
                state.add_member(card.org, new_member, card.user_id, "entra")
            if link_member:
                state.link_member(card.org, link_member, card.user_id)
