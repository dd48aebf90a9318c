"""Which users' photos to check this cycle.

Photo changes never appear in users/delta, so besides the users the pull returned,
each cycle re-checks a slice of the others, oldest check first:

    slice = ceil(users / (refresh_days x cycles per day))

with cycles per day from ``[schedule] interval_minutes``. At the configured interval
every user is re-checked about every ``refresh_days`` and no cycle re-checks more than
its slice, however large the tenant. Users never checked (photos just turned on, a
user whose check failed) are always checked: they are an import, not a re-check.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .store import Stored

MINUTES_PER_DAY = 1440


def slice_size(users: int, refresh_days: int, interval_minutes: int) -> int:
    """How many already-checked users one cycle re-checks."""
    if users <= 0:
        return 0
    cycles = refresh_days * MINUTES_PER_DAY / max(1, interval_minutes)
    return min(users, max(1, math.ceil(users / cycles)))


@dataclass(frozen=True)
class Choice:
    never: list[Stored]  # never checked
    changed: list[Stored]  # returned by this cycle's pull
    rolling: list[Stored]  # the oldest checks, re-checked on schedule

    def all(self) -> list[Stored]:
        return self.never + self.changed + self.rolling


def choose(users: Iterable[Stored], changed: set[str], size: int) -> Choice:
    """Never-checked users first, then the pull's, then the ``size`` oldest others."""
    never: list[Stored] = []
    pulled: list[Stored] = []
    others: list[Stored] = []
    for user in users:
        if user.checked_at is None:
            never.append(user)
        elif user.user_id in changed:
            pulled.append(user)
        else:
            others.append(user)
    rolling = heapq.nsmallest(size, others, key=lambda u: (u.checked_at, u.user_id))
    return Choice(never, pulled, rolling)
