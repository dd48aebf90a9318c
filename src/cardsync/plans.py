"""A cycle's plan, made and kept without holding the tenant in memory.

:func:`make` feeds the planner the candidate rows in chunks, each chunk with a
:class:`~cardsync.planner.PlanContext` holding just the members and cards its users
have (the planner stays pure; the queries are here). The actions go into a
:class:`Plan`: one bucket per order class (delete, deactivate, move, update,
reactivate, create), kept in memory while small and spilled to an anonymous temporary
file once a plan grows past :data:`IN_MEMORY` actions. Reading a plan gives the
actions in the planner's order (by class, then as planned), through the seat limits.

An initial sync of 100,000 users is 100,000 create actions, each with its card: held
in a list they took ~300 MB; spilled, the plan costs a few MB whatever its size.
"""

from __future__ import annotations

import dataclasses
import pickle
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import IO

from . import planner
from .planner import Action, DeleteUser, PlanContext, email_of
from .state import LedgerCard, MirrorUser, State

CHUNK = 500  # rows planned with one context (two member queries, one card query)
IN_MEMORY = 2_000  # actions held in memory before a plan spills to disk

Row = tuple[MirrorUser | None, LedgerCard | None]


class Plan:
    """Planned actions by order class; see the module docstring."""

    def __init__(self, ctx: PlanContext, in_memory: int = IN_MEMORY) -> None:
        self.ctx = ctx
        self.counts: Counter[str] = Counter()  # by kind
        self.destructive = 0
        self.freed: Counter[str] = Counter()  # seats freed by DeleteUser, per org
        self.new_members: Counter[str] = Counter()  # actions that take a seat, per org
        self._in_memory = in_memory
        self._held: dict[int, list[Action]] = {}
        self._files: dict[int, IO[bytes]] = {}
        self._spilled = False

    def __len__(self) -> int:
        return sum(self.counts.values())

    def add(self, action: Action) -> None:
        self.counts[action.kind] += 1
        self.destructive += action.destructive
        if isinstance(action, DeleteUser):
            self.freed[action.org] += 1
        if getattr(action, "new_member", None):
            self.new_members[action.org] += 1
        self._held.setdefault(action.order, []).append(action)
        if len(self) % self._in_memory == 0:
            self._spill()

    def applied(self, hold_destructive: bool = False) -> int:
        """How many actions apply will attempt: all but holds, the new members that
        will wait for a seat, and (``hold_destructive``) the destructive ones."""
        waits = 0
        for org, wanted in self.new_members.items():
            limit = self.ctx.seats.get(org)
            if limit is not None:
                free = limit - self.ctx.seats_used.get(org, 0) + self.freed[org]
                waits += max(0, wanted - max(0, free))
        held = self.destructive if hold_destructive else 0
        return len(self) - self.counts["hold"] - waits - held

    def __iter__(self) -> Iterator[Action]:
        """The actions in order, with new members beyond the seats turned into waits."""
        return planner.within_seats(self.ctx, self._ordered(), self.freed)

    def _ordered(self) -> Iterator[Action]:
        for order in sorted(self._held.keys() | self._files.keys()):
            spilled = self._files.get(order)
            if spilled is not None:
                spilled.flush()
                spilled.seek(0)
                while True:
                    try:
                        # One pickle.load per dump: an Unpickler's memo must not
                        # outlive the pickle it was made for.
                        batch: list[Action] = pickle.load(spilled)
                    except EOFError:
                        break
                    yield from batch
                spilled.seek(0, 2)  # appends go on at the end
            yield from list(self._held.get(order, ()))

    def _spill(self) -> None:
        for order, actions in self._held.items():
            if actions:
                out = self._files.get(order)
                if out is None:
                    # Closed (and so deleted) by close().
                    out = tempfile.TemporaryFile(prefix="cardsync-plan-")  # noqa: SIM115
                    self._files[order] = out
                pickle.dump(actions, out, pickle.HIGHEST_PROTOCOL)
        self._held = {}
        self._spilled = True

    @property
    def spilled(self) -> bool:
        return self._spilled

    def close(self) -> None:
        for spilled in self._files.values():
            spilled.close()
        self._files.clear()
        self._held.clear()

    def __enter__(self) -> Plan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make(state: State, ctx: PlanContext, rows: Iterable[Row], *, chunk: int = CHUNK) -> Plan:
    """Plan ``rows`` (from :meth:`State.plan_rows`) chunk by chunk."""
    plan = Plan(ctx)
    try:
        batch: list[Row] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= chunk:
                _plan_chunk(state, ctx, batch, plan)
                batch = []
        if batch:
            _plan_chunk(state, ctx, batch, plan)
    except BaseException:
        plan.close()
        raise
    return plan


def _plan_chunk(state: State, ctx: PlanContext, rows: list[Row], plan: Plan) -> None:
    chunk_ctx = with_members(state, ctx, rows)
    for user, card in rows:
        action = planner.plan_user(chunk_ctx, user, card)
        if action is not None:
            plan.add(action)


def with_members(state: State, ctx: PlanContext, rows: Iterable[Row]) -> PlanContext:
    """``ctx`` with the members and other organizations' cards of these rows' users."""
    user_ids: set[str] = set()
    emails: set[str] = set()
    for user, card in rows:
        if user is not None:
            user_ids.add(user.id)
            emails.add(email_of(user.person))
        elif card is not None:
            user_ids.add(card.user_id)
    members = state.members_of(user_ids, emails)
    return dataclasses.replace(
        ctx,
        members_by_user={(m.org, m.user_id): m for m in members if m.user_id},
        members_by_email={(m.org, m.email): m for m in members},
        other_cards=state.other_cards(ctx.source, user_ids),
    )
