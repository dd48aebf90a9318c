"""Apply planned actions through a backend, recording the successes in the ledger.

Actions run in batches of up to :data:`BATCH`, and a batch is the durability point:
the backend performs every action of the batch, :func:`cardsync.backends.flush` makes
what it wrote survive a power loss, and only then are the batch's ledger rows written,
in one transaction. A failure is recorded in the report and the action is simply
planned again on the next run; a crash anywhere in a batch is harmless because card
ids are deterministic, backends adopt existing cards and removing a missing card is
fine: the next run plans the unrecorded actions again.

With a :class:`~cardsync.workers.PublishPool`, batches of publishes go to worker
processes (which flush before they answer) while the main process records earlier
batches; batches never overlap across order classes (every delete is done before the
first update, every update before the first create), nor on one card.
Actions that are not applied (``hold``, ``wait``) are skipped here.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import BrokenExecutor, Future
from dataclasses import dataclass, field

from . import backends
from .backends import Backend
from .errors import BackendError, redact
from .models import Card, Published
from .planner import (
    Action,
    ActionRecord,
    CreateCard,
    DeactivateCard,
    DeleteCard,
    DeleteUser,
    MoveCard,
    ReactivateCard,
    UpdateCard,
    record,
)
from .state import State
from .workers import Outcome, PublishPool

BATCH = 200  # actions per durability point: one flush, one ledger transaction

OnStep = Callable[[Action, bool], None]  # an action was attempted; did it succeed?


@dataclass
class ApplyReport:
    done: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[ActionRecord, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return sum(self.done.values()) > 0


@dataclass(frozen=True)
class Applier:
    """Executes actions for the organization ``source`` (whose mirror rows they
    concern) through ``backend``, with the fingerprint of each target organization;
    batches of publishes go to ``pool`` when one is given."""

    backend: Backend
    state: State
    source: str
    fingerprints: Mapping[str, str]
    pool: PublishPool | None = None
    batch: int = BATCH

    def run(self, actions: Iterable[Action], on_step: OnStep | None = None) -> ApplyReport:
        """Execute ``actions`` in order. Never raises for a single failed action."""
        report = ApplyReport()
        step = on_step or (lambda action, ok: None)
        pending: deque[tuple[list[Action], Future[list[Outcome]]]] = deque()
        busy: set[tuple[str, str]] = set()  # cards being published by workers
        pool = self.pool
        depth = 2 * pool.workers if pool is not None else 0
        for batch in _batches(actions, self.batch):
            cards = [card for a in batch if (card := _card(a)) is not None]
            keys = {(card.org, card.card_id) for card in cards}
            parallel = pool is not None and len(cards) == len(batch)
            in_class = not pending or pending[0][0][0].order == batch[0].order
            if not parallel or not in_class or keys & busy:
                while pending:
                    self._finish(*_result(pending.popleft()), report, step)
                busy.clear()
            if parallel:
                assert pool is not None
                try:
                    future = pool.submit(cards)
                except BrokenExecutor:  # a worker died: the rest runs in this process
                    pool = None
                    while pending:
                        self._finish(*_result(pending.popleft()), report, step)
                else:
                    pending.append((batch, future))
                    busy |= keys
                    while len(pending) > depth:
                        self._finish(*_result(pending.popleft()), report, step)
                    continue
            self._finish(batch, [self._call(a) for a in batch], report, step)
        while pending:
            self._finish(*_result(pending.popleft()), report, step)
        return report

    # -- one batch ---------------------------------------------------------------------

    def _call(self, action: Action) -> Outcome | None:
        """The backend side of ``action`` in this process: what publish returned (None
        for a removal), or the error's message."""
        try:
            match action:
                case DeleteUser(org=org, card_id=card_id):
                    if card_id:
                        self.backend.remove(org, card_id)
                    return None
                case DeleteCard(org=org, card_id=card_id):
                    self.backend.remove(org, card_id)
                    return None
                case _:
                    card = _card(action)
                    if card is None:
                        raise TypeError(f"unknown action {action!r}")
                    return self.backend.publish(card)
        except (BackendError, OSError) as exc:
            return redact(str(exc))

    def _finish(
        self, batch: list[Action], outcomes: list[Outcome | None], report: ApplyReport,
        step: OnStep,
    ) -> None:
        """Complete a batch whose backend calls are done: moves remove the old card,
        the backend flushes, and the successes go to the ledger in one transaction."""
        results: list[Outcome | None] = []
        for action, outcome in zip(batch, outcomes, strict=True):
            if isinstance(action, MoveCard) and not isinstance(outcome, str):
                # The new card exists before the old one goes: a crash in between is
                # replanned as the same move, and both backend calls are idempotent.
                try:
                    self.backend.remove(action.from_org, action.card.card_id)  # type: ignore[union-attr]
                except (BackendError, OSError) as exc:
                    outcome = redact(str(exc))
            results.append(outcome)
        try:
            backends.flush(self.backend)
        except (BackendError, OSError) as exc:
            # Nothing of this batch is known to be durable: leave it all to the next run.
            message = f"could not make the batch durable: {redact(str(exc))}"
            results = [message if not isinstance(r, str) else r for r in results]
        with self.state.transaction():
            for action, outcome in zip(batch, results, strict=True):
                if not isinstance(outcome, str):
                    self._record(action, outcome)
        for action, outcome in zip(batch, results, strict=True):
            if isinstance(outcome, str):
                report.failures.append((record(action), outcome))
            else:
                report.done[action.kind] += 1
            step(action, not isinstance(outcome, str))

    def _record(self, action: Action, published: Published | None) -> None:
        state = self.state
        match action:
            case DeleteUser(org=org, user_id=user_id, email=email):
                state.forget_card(org, user_id)
                state.remove_member(org, email)
                state.purge_user(self.source, user_id)
            case DeleteCard(org=org, user_id=user_id, purge_user=purge):
                state.forget_card(org, user_id)
                if purge:
                    state.purge_user(self.source, user_id)
            case MoveCard(card=card, from_org=from_org, new_member=new_member):
                assert card is not None and published is not None
                state.forget_card(from_org, card.user_id)
                state.remove_entra_member_of(from_org, card.user_id)
                self._record_card(card, published, new_member=new_member)
            case CreateCard(card=card, new_member=new_member, link_member=link):
                assert card is not None and published is not None
                self._record_card(card, published, new_member=new_member, link_member=link)
            case UpdateCard(card=card) | ReactivateCard(card=card) | DeactivateCard(card=card):
                assert card is not None and published is not None
                self._record_card(card, published)
            case _:
                raise TypeError(f"unknown action {action!r}")

    def _record_card(
        self,
        card: Card,
        published: Published,
        *,
        new_member: str | None = None,
        link_member: str | None = None,
    ) -> None:
        state = self.state
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


def _card(action: Action) -> Card | None:
    return getattr(action, "card", None)


def _result(
    item: tuple[list[Action], Future[list[Outcome]]],
) -> tuple[list[Action], list[Outcome | None]]:
    batch, future = item
    try:
        return batch, list(future.result())
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        # A worker died (killed, out of memory): its batch is left to the next run.
        message = f"the publishing worker failed: {type(exc).__name__}: {redact(str(exc))}"
        return batch, [message] * len(batch)


def _batches(actions: Iterable[Action], size: int) -> Iterator[list[Action]]:
    """Applied actions in batches of up to ``size``, never mixing order classes."""
    batch: list[Action] = []
    for action in actions:
        if not action.applied:
            continue
        if batch and (len(batch) >= size or batch[0].order != action.order):
            yield batch
            batch = []
        batch.append(action)
    if batch:
        yield batch
