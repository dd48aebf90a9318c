"""The ``photos`` table (state migration ``002_photos``), for one organization.

One row per user whose photo was checked at least once:

    etag        Graph's @odata.mediaEtag of the stored photo; NULL: no photo (avatar)
    web, thumb  the resized JPEGs (NULL with etag)
    checked_at  when Graph was last asked (UTC ISO 8601 with microseconds, so the
                rolling refresh orders checks made within one second)
    error       the last failure for this user, or NULL

A photo whose bytes could not be decoded keeps the previous row (or a row without a
photo) and records ``unreadable image (etag …): reason`` in ``error``, so the same
unreadable photo is not downloaded again until its etag changes.

The planner reads this table through ``State.plan_rows`` and republishes a card when
``etag`` differs from the etag the card was published with. Every write here happens
inside the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from ..state import State

_BAD_ETAG = re.compile(r"unreadable image \(etag (.*?)\): ")


def stamp() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Stored:
    """What is known about one user's photo."""

    user_id: str
    checked_at: str | None  # None: never checked
    etag: str | None = None
    error: str | None = None

    @property
    def bad_etag(self) -> str | None:
        """The etag of a photo whose bytes could not be decoded, if that was the last error."""
        match = _BAD_ETAG.match(self.error or "")
        return match.group(1) if match else None

    def known(self) -> frozenset[str]:
        """Etags whose bytes need not be downloaded again."""
        return frozenset(e for e in (self.etag, self.bad_etag) if e)


def unreadable_error(etag: str | None, reason: str) -> str:
    return f"unreadable image (etag {etag or '-'}): {reason}"


def users(state: State, org: str, in_scope: str = "1") -> list[Stored]:
    """The present users of the organization's mirror that match ``in_scope`` (an SQL
    condition over ``u``, see ``cardsync.scope.in_scope_sql``), with their photo rows."""
    rows = state.db.conn.execute(
        "SELECT u.id, p.checked_at, p.etag, p.error FROM users u "
        "LEFT JOIN photos p ON p.org = u.org AND p.user_id = u.id "
        f"WHERE u.org = ? AND u.removed IS NULL AND ({in_scope})",
        [org],
    )
    return [Stored(*row) for row in rows]


def has_rows(state: State, org: str) -> bool:
    row = state.db.conn.execute("SELECT 1 FROM photos WHERE org = ? LIMIT 1", [org]).fetchone()
    return row is not None


def unchanged(state: State, org: str, user_ids: list[str], now: str, *, clear: bool) -> None:
    """The photo is the stored one: only note the check (and, with ``clear``, that the
    last error is over)."""
    sql = "UPDATE photos SET checked_at = ?" + (", error = NULL" if clear else "")
    state.db.conn.executemany(
        sql + " WHERE org = ? AND user_id = ?", [(now, org, uid) for uid in user_ids]
    )


def absent(state: State, org: str, user_id: str, now: str) -> None:
    """The user has no photo (Graph answered 404): the card shows the initials avatar."""
    state.db.conn.execute(
        "INSERT INTO photos (org, user_id, etag, web, thumb, checked_at, error) "
        "VALUES (?, ?, NULL, NULL, NULL, ?, NULL) "
        "ON CONFLICT (org, user_id) DO UPDATE SET etag = NULL, web = NULL, thumb = NULL, "
        "checked_at = excluded.checked_at, error = NULL",
        [org, user_id, now],
    )


def save(
    state: State, org: str, user_id: str, etag: str, web: bytes, thumb: bytes, now: str
) -> None:
    state.db.conn.execute(
        "INSERT INTO photos (org, user_id, etag, web, thumb, checked_at, error) "
        "VALUES (?, ?, ?, ?, ?, ?, NULL) "
        "ON CONFLICT (org, user_id) DO UPDATE SET etag = excluded.etag, web = excluded.web, "
        "thumb = excluded.thumb, checked_at = excluded.checked_at, error = NULL",
        [org, user_id, etag, web, thumb, now],
    )


def unreadable(
    state: State, org: str, user_id: str, etag: str | None, reason: str, now: str
) -> None:
    """Graph's bytes could not be used: keep the last good photo (or none), note why."""
    state.db.conn.execute(
        "INSERT INTO photos (org, user_id, etag, web, thumb, checked_at, error) "
        "VALUES (?, ?, NULL, NULL, NULL, ?, ?) "
        "ON CONFLICT (org, user_id) DO UPDATE SET checked_at = excluded.checked_at, "
        "error = excluded.error",
        [org, user_id, now, unreadable_error(etag, reason)],
    )


def failed(state: State, org: str, user_id: str, reason: str) -> None:
    """The check failed (throttled past the budget, a server error): keep everything,
    including ``checked_at``, so the user is among the first checked next cycle."""
    state.db.conn.execute(
        "UPDATE photos SET error = ? WHERE org = ? AND user_id = ?", [reason, org, user_id]
    )


def forget_gone(state: State, org: str) -> int:
    """Drop the rows of users no longer in the mirror or permanently deleted (a
    soft-deleted user keeps theirs: a restore brings the card back as it was)."""
    cursor = state.db.conn.execute(
        "DELETE FROM photos WHERE org = ? AND NOT EXISTS (SELECT 1 FROM users u "
        "WHERE u.org = photos.org AND u.id = photos.user_id "
        "AND (u.removed IS NULL OR u.removed = 'changed'))",
        [org],
    )
    return cursor.rowcount


def forget_org(state: State, org: str) -> None:
    """Photos turned off: cards go back to the initials avatar."""
    state.db.conn.execute("DELETE FROM photos WHERE org = ?", [org])
