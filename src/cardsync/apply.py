"""Apply planned actions through a backend, recording each success as it happens.

A ledger row changes only after the backend call succeeded, in its own
transaction. A failure is recorded in the report and the action is simply planned
again on the next run; a crash between the backend call and the ledger write is
harmless because card ids are deterministic and backends adopt existing cards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .backends import Backend
from .errors import BackendError, redact
from .planner import (
    Action,
    CreateCard,
    DeactivateCard,
    DeleteCard,
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


def apply(
    actions: Sequence[Action],
    backend: Backend,
    state: State,
    fingerprint: str,
    *,
    on_step: Callable[[Action], None] | None = None,
) -> ApplyReport:
    """Execute ``actions`` in order. Never raises for a single failed action."""
    report = ApplyReport()
    for action in actions:
        try:
            _execute(action, backend, state, fingerprint)
        except (BackendError, OSError) as exc:
            report.failures.append((action, redact(str(exc))))
        else:
            report.done[action.kind] += 1
        if on_step is not None:
            on_step(action)
    return report


def _execute(action: Action, backend: Backend, state: State, fingerprint: str) -> None:
    match action:
        case DeleteCard(org=org, user_id=user_id, card_id=card_id, purge_user=purge):
            backend.remove(org, card_id)
            with state.transaction():
                state.forget_card(org, user_id)
                if purge:
                    state.purge_user(org, user_id)
        case CreateCard(card=card) | UpdateCard(card=card) | ReactivateCard(
            card=card
        ) | DeactivateCard(card=card):
            assert card is not None
            published = backend.publish(card)
            with state.transaction():
                state.record_card(
                    card.org,
                    card.user_id,
                    card.card_id,
                    published.url,
                    card.person,
                    fingerprint,
                    card.active,
                    published.files,
                    card.photo.etag if card.photo else None,
                )
        case _:
            raise TypeError(f"unknown action {action!r}")
