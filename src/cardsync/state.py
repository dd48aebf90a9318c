"""The local state: one SQLite file, written through sqlite-utils.

Tables (see ``_MIGRATIONS`` for the exact schema):

    meta     key/value: the secret that derives card ids
    cursors  per organization: the stored deltaLink
    users    the directory mirror, per organization (one row per Entra user seen)
    cards    the ledger of published cards, per organization
    runs     one row per sync of one organization: start, end, result, counts

Consistency rules that make crashes harmless:

- Mirror changes from a delta round are committed in one transaction (per 100,000
  users); the deltaLink is saved in the same transaction as the last page, so a killed run
  restarts from the old link and replays the pages (replays are idempotent).
- Ledger rows are written only after the backend succeeded and made the batch of
  actions durable (``flush``), one transaction per batch, so a killed apply is
  re-planned, never lost or duplicated (card ids are deterministic and backends
  adopt existing cards).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import json
import logging
import os
import secrets
import sqlite3
import sys
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .canonical import (
    canonical,
    content_hash,
    person_from_dict,
    person_from_json,
    person_to_json,
)
from .errors import LockedError, StateError
from .graph.parse import person_from_graph_object
from .models import DirectoryUser, GraphUser, Person, Photo, Removal

log = logging.getLogger("cardsync.state")

SCHEMA_NAME = "cardsync"
# SQLite's page cache, KiB (its default is 2 MiB). The primary-key index of a
# 100,000-user mirror (~5 MiB) fits, so merging a round into it does not re-read
# pages it just wrote. 64 MiB measured no faster and stays in the process's RSS.
CACHE_KIB = 16_384
# Page size of a new state file (SQLite's default is 4 KiB; an existing file keeps its
# own). A mirror row is Graph's JSON for one user, ~0.5-1 KB: with 16 KiB pages, storing
# a 100,000-user round takes ~25% less CPU (fewer B-tree pages to split, fewer WAL
# frames) and the file is ~8% smaller, and an incremental cycle is as fast as with 4 KiB
# (benchmarks/ingest_overlap.py and sync_bench.py; docs/performance.md).
PAGE_SIZE = 16_384
WAL_AUTOCHECKPOINT = 1000  # pages: SQLite's default, outside bulk writes
BUSY_TIMEOUT_MS = 30_000  # how long a statement waits for another writer
UPSERT_ROWS = 2048  # mirror rows per statement at most (see State._flush_upserts)
# The planning index over the mirror (migration 005). A first full round into an empty
# mirror is stored without it and builds it once at the end (State.first_round):
# keeping it current row by row costs a random index insert per user. open_state
# builds it if a run was killed in between.
STEADY_INDEX = (
    "CREATE INDEX IF NOT EXISTS users_steady ON users "
    "(org, id, hash, removed, account_enabled, user_type)"
)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def stored_person(text: str) -> Person:
    """The Person of a mirror row: Graph's JSON text of the user object (it has an
    ``id``), or the canonical JSON of a Person."""
    data = json.loads(text)
    if "id" in data:
        return person_from_graph_object(data, text)
    return person_from_dict(data)


@dataclass(frozen=True, slots=True)
class MirrorUser:
    """A row of the directory mirror."""

    org: str
    id: str
    person: Person
    hash: str
    account_enabled: bool
    user_type: str
    removed: str | None  # None, "changed" (soft delete), "deleted" (permanent)
    photo: Photo | None = None  # the stored, resized photo (photo sync on), else None
    in_scope: bool = True  # in the organization's sync scope (and not an excluded guest)


@dataclass(frozen=True, slots=True)
class LedgerCard:
    """A row of the cards ledger: what was published, and where."""

    org: str
    user_id: str
    card_id: str
    url: str
    hash: str
    fingerprint: str
    active: bool
    person: Person
    files: dict[str, str]
    photo_etag: str | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """A user of an organization (takes a seat). ``origin`` is ``entra`` (created by
    sync) or ``invited`` (by hand); ``user_id`` is None until Entra knows them."""

    org: str
    email: str
    user_id: str | None
    origin: str
    card_suppressed: bool = False


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: int
    org: str
    mode: str
    started_at: str
    finished_at: str | None
    result: str | None
    counts: dict[str, int]
    error: str | None
    holds: list[dict[str, Any]] = field(default_factory=list)


def _m001_initial(db: Any) -> None:
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE cursors (
            org TEXT PRIMARY KEY,
            delta_link TEXT,
            saved_at TEXT
        );
        CREATE TABLE users (
            org TEXT NOT NULL,
            id TEXT NOT NULL,
            upn TEXT NOT NULL DEFAULT '',
            mail TEXT NOT NULL DEFAULT '',
            display_name TEXT NOT NULL DEFAULT '',
            person TEXT NOT NULL,
            hash TEXT NOT NULL,
            account_enabled INTEGER NOT NULL DEFAULT 1,
            user_type TEXT NOT NULL DEFAULT 'Member',
            removed TEXT,
            round TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (org, id)
        );
        CREATE TABLE cards (
            org TEXT NOT NULL,
            user_id TEXT NOT NULL,
            card_id TEXT NOT NULL,
            url TEXT NOT NULL,
            hash TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            active INTEGER NOT NULL DEFAULT 1,
            display_name TEXT NOT NULL DEFAULT '',
            upn TEXT NOT NULL DEFAULT '',
            person TEXT NOT NULL,
            files TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (org, user_id)
        );
        CREATE UNIQUE INDEX cards_card_id ON cards (org, card_id);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            org TEXT NOT NULL,
            mode TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            result TEXT,
            counts TEXT NOT NULL DEFAULT '{}',
            error TEXT
        );
        CREATE INDEX runs_org ON runs (org, id);
        """
    )
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('card_key', ?)", [secrets.token_hex(32)]
    )


def _m002_photos(db: Any) -> None:
    db.executescript(
        """
        CREATE TABLE photos (
            org TEXT NOT NULL,
            user_id TEXT NOT NULL,
            etag TEXT,              -- Graph's @odata.mediaEtag; NULL when there is no photo
            web BLOB,               -- resized JPEG for card pages
            thumb BLOB,             -- ~150 px JPEG for vCards
            checked_at TEXT NOT NULL,
            error TEXT,             -- last failure for this user (bad bytes, ...), if any
            PRIMARY KEY (org, user_id)
        );
        ALTER TABLE cards ADD COLUMN photo_etag TEXT;
        """
    )


def _m003_lifecycle(db: Any) -> None:
    db.executescript(
        """
        -- The organization's users (what takes a seat): created with a card for Entra
        -- users, or by hand (`users invite`) for invited ones, linked to Entra by mail.
        CREATE TABLE members (
            org TEXT NOT NULL,
            email TEXT NOT NULL,          -- lower-cased mail (or UPN) used for linking
            user_id TEXT,                 -- Entra object id; NULL until Entra knows them
            origin TEXT NOT NULL,         -- 'entra' | 'invited'
            card_suppressed INTEGER NOT NULL DEFAULT 0,  -- card deleted by hand
            created_at TEXT NOT NULL,
            PRIMARY KEY (org, email)
        );
        CREATE UNIQUE INDEX members_user ON members (org, user_id) WHERE user_id IS NOT NULL;
        -- Roles by mail: seeded from [[organizations.people]], changed by transfer-ownership.
        CREATE TABLE roles (
            org TEXT NOT NULL,
            email TEXT NOT NULL,
            role TEXT NOT NULL,
            PRIMARY KEY (org, email)
        );
        CREATE TABLE people_applied (
            org TEXT NOT NULL,
            email TEXT NOT NULL,
            role TEXT NOT NULL,
            PRIMARY KEY (org, email)
        );
        -- Sync scope: users in scope for an organization (scope = assigned | groups),
        -- one row per way they are in scope ('direct' or a group id).
        CREATE TABLE scope_members (
            org TEXT NOT NULL,
            user_id TEXT NOT NULL,
            via TEXT NOT NULL,
            PRIMARY KEY (org, user_id, via)
        );
        CREATE INDEX scope_members_user ON scope_members (org, user_id);
        CREATE TABLE scope_state (
            org TEXT PRIMARY KEY,
            service_principal_id TEXT,
            groups TEXT NOT NULL DEFAULT '[]',   -- the groups whose members are in scope
            groups_delta_link TEXT,
            refreshed_at TEXT
        );
        -- Which integration (source organization) a card came from.
        ALTER TABLE cards ADD COLUMN source TEXT;
        UPDATE cards SET source = org;
        -- Set when a safety limit tripped; destructive actions wait for --allow-deletes.
        ALTER TABLE cursors ADD COLUMN quarantine TEXT;
        ALTER TABLE runs ADD COLUMN holds TEXT NOT NULL DEFAULT '[]';
        """
    )
    # Cards published before this migration belong to Entra users.
    db.execute(
        "INSERT OR IGNORE INTO members (org, email, user_id, origin, created_at) "
        "SELECT c.org, lower(coalesce(nullif(u.mail, ''), c.upn, c.user_id)), c.user_id, "
        "'entra', c.created_at FROM cards c LEFT JOIN users u "
        "ON u.org = c.org AND u.id = c.user_id"
    )


def _m004_card_user_index(db: Any) -> None:
    # Planning joins each mirror row to the card its integration published
    # (cards.user_id + cards.source): without this index that join scans the whole
    # ledger per user, quadratic at tenant scale.
    db.execute("CREATE INDEX cards_user_source ON cards (user_id, source)")


def _m005_plan_indexes(db: Any) -> None:
    db.executescript(
        """
        -- Planning skips users in a steady state in SQL (State.plan_rows). With every
        -- column that test reads in these indexes, scanning an unchanged tenant reads
        -- index pages only, never the rows with their JSON.
        DROP INDEX cards_user_source;
        CREATE INDEX cards_user_source ON cards
            (user_id, source, hash, fingerprint, active, photo_etag, org);
        -- (mail and upn, which domain assignment reads, are left out: every index
        -- entry costs at ingest, which inserts 100,000 random ids at tenant scale.)
        CREATE INDEX users_steady ON users
            (org, id, hash, removed, account_enabled, user_type);
        -- The members of the users being planned, in any organization.
        CREATE INDEX members_user_id ON members (user_id);
        CREATE INDEX members_email ON members (email);
        """
    )


# Imported by sqlite-utils when installed, only to map their types; cardsync never hands
# it a DataFrame or a numpy value (see _import_sqlite_utils).
_UNUSED_BY_SQLITE_UTILS = ("pandas", "numpy")


def _import_sqlite_utils() -> None:
    """Import sqlite-utils without the pandas and numpy it imports at import time when
    they happen to be installed: ~0.06 s for numpy and several times that for pandas, in
    every cardsync process that opens the state (``cardsync status`` included). An
    ``import`` of a name mapped to None fails, which sqlite-utils takes as "not
    installed". Anything that imported them before keeps them; anything after gets them
    as usual."""
    if "sqlite_utils.db" in sys.modules:
        return
    hidden = [name for name in _UNUSED_BY_SQLITE_UTILS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import sqlite_utils.db  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def _migrations() -> Any:
    from sqlite_utils.migrations import Migrations  # (open_state imported sqlite-utils)

    migrations = Migrations(SCHEMA_NAME)
    migrations(name="001_initial")(_m001_initial)
    migrations(name="002_photos")(_m002_photos)
    migrations(name="003_lifecycle")(_m003_lifecycle)
    migrations(name="004_card_user_index")(_m004_card_user_index)
    migrations(name="005_plan_indexes")(_m005_plan_indexes)
    return migrations


class Lock:
    """An exclusive advisory lock next to the state file, held for a whole run.

    flock locks vanish with the process, so a killed run never leaves a stale lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LockedError(
                f"another cardsync run is in progress (pid {holder}, lock {self.path})",
                "wait for it to finish; runs never overlap",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class State:
    """The state database. Open it with :func:`open_state`."""

    def __init__(self, db: Any, path: Path) -> None:
        self.db = db
        self.path = path

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.db.atomic():
            yield

    @contextlib.contextmanager
    def bulk_writes(self) -> Iterator[None]:
        """Writing a delta round: the WAL is copied back into the database once at the
        end instead of every ~4 MB, each copy being a pass over random index pages and
        two fsyncs. Committed transactions are as
        durable as ever (synchronous=NORMAL in WAL mode)."""
        conn = self.db.conn
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
            if not conn.in_transaction:  # (a dry run holds one open, to roll it back)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @contextlib.contextmanager
    def first_round(self, org: str) -> Iterator[None]:
        """Storing a first full round: when the mirror holds no row at all, drop the
        planning index and build it once afterwards (one sort instead of 100,000
        random inserts), while the round is checkpointed beside it. Otherwise nothing
        changes."""
        empty = self.db.execute("SELECT NOT EXISTS (SELECT 1 FROM users)").fetchone()[0]
        if not empty:
            yield
            return
        self.db.execute("DROP INDEX IF EXISTS users_steady")
        try:
            yield
        finally:
            with self._checkpoint_alongside():
                self.db.execute(STEADY_INDEX)

    @contextlib.contextmanager
    def _checkpoint_alongside(self) -> Iterator[None]:
        """Copy the WAL's committed frames into the database file on a second connection
        while the caller writes on this one: SQLite runs both at once, without the GIL
        (after a 100,000-user first round: building the index and checkpointing the round,
        0.11 s instead of 0.19 s one after the other). A passive checkpoint never waits for
        a lock, and what it leaves the next checkpoint takes; it is only an optimization,
        so its failure is logged, never raised."""

        def checkpoint() -> None:
            try:
                conn = sqlite3.connect(str(self.path), timeout=0)
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                finally:
                    conn.close()
            except sqlite3.Error as exc:
                log.debug("checkpoint alongside the planning index failed: %s", exc)

        thread = threading.Thread(target=checkpoint, name="cardsync-checkpoint", daemon=True)
        thread.start()
        try:
            yield
        finally:
            thread.join()

    def card_key(self) -> bytes:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'card_key'").fetchone()
        return bytes.fromhex(row[0])

    # -- cursors -------------------------------------------------------------------

    def delta_link(self, org: str) -> str | None:
        row = self.db.execute("SELECT delta_link FROM cursors WHERE org = ?", [org]).fetchone()
        return row[0] if row else None

    def save_delta_link(self, org: str, link: str | None) -> None:
        self.db.execute(
            "INSERT INTO cursors (org, delta_link, saved_at) VALUES (?, ?, ?) "
            "ON CONFLICT (org) DO UPDATE SET delta_link = excluded.delta_link, "
            "saved_at = excluded.saved_at",
            [org, link, now()],
        )

    # -- the directory mirror ------------------------------------------------------

    def ingest(
        self,
        org: str,
        entries: Iterable[DirectoryUser | GraphUser | Removal],
        round_id: str | None = None,
    ) -> tuple[int, int]:
        """Merge delta entries into the mirror (in Graph's order; the last entry for an
        id wins). Returns (users upserted, removals). Call inside a transaction.

        A row's ``person`` is the user object's JSON text as Graph sent it (GraphUser),
        or the canonical JSON of a Person (DirectoryUser, e.g. provisioning on demand);
        :func:`stored_person` reads both. ``hash`` is taken over that text."""
        stamp = now()
        upserts: dict[str, tuple[Any, ...]] = {}
        count = removals = 0
        conn = self.db.conn
        per = _rows_per_statement(conn)
        for entry in entries:
            if len(upserts) >= per:
                count += self._flush_upserts(upserts)
            if isinstance(entry, Removal):
                removals += 1
                if entry.id in upserts:
                    count += self._flush_upserts(upserts)
                conn.execute(
                    "UPDATE users SET removed = ?, updated_at = ?, round = coalesce(?, round) "
                    "WHERE org = ? AND id = ?",
                    [entry.reason, stamp, round_id, org, entry.id],
                )
                continue
            if isinstance(entry, GraphUser):
                # Graph's own text, and the hash over it: nothing to build or encode.
                upserts[entry.id] = (
                    org,
                    entry.id,
                    entry.user_principal_name,
                    entry.mail,
                    entry.display_name,
                    entry.text,
                    entry.hash,
                    1 if entry.account_enabled else 0,
                    entry.user_type,
                    round_id,
                    stamp,
                )
                continue
            person = entry.person
            person_json, person_hash = canonical(person)
            upserts[entry.id] = (
                org,
                entry.id,
                person.user_principal_name,
                person.mail,
                person.display_name,
                person_json,
                person_hash,
                1 if entry.account_enabled else 0,
                entry.user_type,
                round_id,
                stamp,
            )
        count += self._flush_upserts(upserts)
        return count, removals

    def _flush_upserts(self, upserts: dict[str, tuple[Any, ...]]) -> int:
        """Write and clear ``upserts`` (at most ``_rows_per_statement`` rows: ingest
        flushes before it holds more) in one statement; how many rows that was.

        Many rows per statement: Python's sqlite3 lets other threads run during each
        step of a statement and must win the GIL back afterwards, which takes up to a
        switch interval (5 ms) when another thread is busy. One step per row made a
        100,000-user ingest several times slower than SQLite's own work, when the Graph
        source parsed on a thread of its own. (A sync now stores a round page by page,
        200 rows a statement, on the thread that reads it.)"""
        if not upserts:
            return 0
        rows = list(upserts.values())
        upserts.clear()
        self.db.conn.execute(_upsert_sql(len(rows)), [v for row in rows for v in row])
        return len(rows)

    def unseen_in_round(self, org: str, round_id: str) -> list[str]:
        """Users still present in the mirror but not returned by full round ``round_id``."""
        rows = self.db.execute(
            "SELECT id FROM users WHERE org = ? AND removed IS NULL "
            "AND (round IS NULL OR round != ?)",
            [org, round_id],
        )
        return [r[0] for r in rows]

    def mark_removed(self, org: str, user_ids: Iterable[str], reason: str) -> None:
        stamp = now()
        self.db.conn.executemany(
            "UPDATE users SET removed = ?, updated_at = ? WHERE org = ? AND id = ?",
            [(reason, stamp, org, uid) for uid in user_ids],
        )

    def purge_user(self, org: str, user_id: str) -> None:
        self.db.execute("DELETE FROM users WHERE org = ? AND id = ?", [org, user_id])

    def find_user(self, org: str, key: str) -> str | None:
        """The object id of a mirrored user, by object id, UPN or mail."""
        row = self.db.execute(
            "SELECT id FROM users WHERE org = ? AND (id = ? OR lower(upn) = lower(?) "
            "OR lower(mail) = lower(?)) LIMIT 1",
            [org, key, key, key],
        ).fetchone()
        return row[0] if row else None

    def mirror_user(self, org: str, user_id: str) -> MirrorUser | None:
        row = self.db.execute(
            f"SELECT {_USER_COLS} FROM users u LEFT JOIN photos p "
            "ON p.org = u.org AND p.user_id = u.id WHERE u.org = ? AND u.id = ?",
            [org, user_id],
        ).fetchone()
        return _mirror_from_row(row) if row else None

    # -- planning input ------------------------------------------------------------

    def plan_rows(
        self,
        org: str,
        fingerprints: Mapping[str, str],
        in_scope: str = "1",
        routes: Mapping[str, str] | None = None,
        everything: bool = False,
        user_id: str | None = None,
    ) -> Iterator[tuple[MirrorUser | None, LedgerCard | None]]:
        """Pairs of (mirror row, the card this organization's integration published)
        that may need an action, plus cards whose mirror row is gone.

        ``in_scope`` is an SQL expression over ``u`` (cardsync.scope.in_scope_sql);
        ``routes`` maps mail domains to organizations (domain assignment). Rows in a
        steady state (active, in scope, in the right organization, published with the
        same content, photo and fingerprint) are skipped in SQL unless ``everything``
        is set: the planner would produce nothing for them, so this only saves time.
        """
        params: dict[str, Any] = {"org": org}
        fp = _case("c.org", fingerprints, "fp", params, "NULL")
        route = _case(f"substr({_EMAIL}, instr({_EMAIL}, '@') + 1)", routes or {}, "rt",
                      params, ":org")
        steady = (
            "u.removed IS NULL AND u.account_enabled = 1 AND c.user_id IS NOT NULL "
            f"AND c.hash = u.hash AND c.fingerprint = {fp} AND c.active = 1 "
            f"AND c.photo_etag IS p.etag AND ({in_scope}) AND c.org = {route}"
        )
        where = "1" if everything else f"NOT ({steady})"
        only_user = only_card = ""
        if user_id is not None:
            params["uid"] = user_id
            only_user, only_card = " AND u.id = :uid", " AND c2.user_id = :uid"
        sql = (
            f"SELECT {_USER_COLS}, ({in_scope}), {_CARD_COLS} FROM users u "
            "LEFT JOIN cards c ON c.user_id = u.id AND c.source = u.org "
            "LEFT JOIN photos p ON p.org = u.org AND p.user_id = u.id "
            f"WHERE u.org = :org AND {where}{only_user} "
            # Cards whose mirror row is gone: found in the covering index, so only
            # those cards' rows are read.
            f"UNION ALL SELECT {_NULL_USER_COLS}, NULL, {_CARD_COLS} FROM cards c "
            "WHERE c.rowid IN (SELECT c2.rowid FROM cards c2 "
            f"WHERE c2.source = :org{only_card} AND NOT EXISTS "
            "(SELECT 1 FROM users u WHERE u.org = c2.source AND u.id = c2.user_id))"
        )
        cursor = self.db.conn.execute(sql, params)
        n_user = _USER_COLS.count(",") + 1
        for row in cursor:
            user = None
            if row[0] is not None:
                user = _mirror_from_row(row[:n_user], in_scope=bool(row[n_user]))
            card = _card_from_row(row[n_user + 1:]) if row[n_user + 1] is not None else None
            yield user, card

    # -- members, roles, seats -----------------------------------------------------

    def members(self, org: str | None = None) -> list[Member]:
        sql = "SELECT org, email, user_id, origin, card_suppressed FROM members"
        params: list[Any] = []
        if org is not None:
            sql += " WHERE org = ?"
            params.append(org)
        rows = self.db.execute(sql + " ORDER BY org, email", params)
        return [Member(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    def members_of(self, user_ids: Collection[str], emails: Collection[str]) -> list[Member]:
        """The members, in any organization, with one of these Entra ids or mails
        (lower-case): what planning a chunk of users needs."""
        found: dict[tuple[str, str], Member] = {}
        for column, keys in (("user_id", list(user_ids)), ("email", list(emails))):
            for part in _parts(keys):
                rows = self.db.conn.execute(
                    "SELECT org, email, user_id, origin, card_suppressed FROM members "
                    f"WHERE {column} IN ({', '.join('?' * len(part))})",
                    part,
                )
                for r in rows:
                    found[(r[0], r[1])] = Member(r[0], r[1], r[2], r[3], bool(r[4]))
        return list(found.values())

    def member(self, org: str, email: str) -> Member | None:
        found = [m for m in self.members(org) if m.email == email.lower()]
        return found[0] if found else None

    def seats_used(self, org: str) -> int:
        return int(
            self.db.execute("SELECT count(*) FROM members WHERE org = ?", [org]).fetchone()[0]
        )

    def add_member(self, org: str, email: str, user_id: str | None, origin: str) -> None:
        self.db.execute(
            "INSERT INTO members (org, email, user_id, origin, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (org, email) DO UPDATE SET user_id = excluded.user_id",
            [org, email.lower(), user_id, origin, now()],
        )

    def link_member(self, org: str, email: str, user_id: str) -> None:
        self.db.execute(
            "UPDATE members SET user_id = ? WHERE org = ? AND email = ?",
            [user_id, org, email.lower()],
        )

    def remove_member(self, org: str, email: str) -> None:
        self.db.execute("DELETE FROM members WHERE org = ? AND email = ?", [org, email.lower()])

    def remove_entra_member_of(self, org: str, user_id: str) -> None:
        self.db.execute(
            "DELETE FROM members WHERE org = ? AND user_id = ? AND origin = 'entra'",
            [org, user_id],
        )

    def suppress_card(self, org: str, email: str, suppressed: bool) -> None:
        self.db.execute(
            "UPDATE members SET card_suppressed = ? WHERE org = ? AND email = ?",
            [1 if suppressed else 0, org, email.lower()],
        )

    def roles(self, org: str | None = None) -> dict[tuple[str, str], str]:
        rows = self.db.execute("SELECT org, email, role FROM roles")
        return {(r[0], r[1]): r[2] for r in rows if org is None or r[0] == org}

    def set_role(self, org: str, email: str, role: str | None) -> None:
        if role is None:
            self.db.execute("DELETE FROM roles WHERE org = ? AND email = ?", [org, email])
            return
        self.db.execute(
            "INSERT INTO roles (org, email, role) VALUES (?, ?, ?) "
            "ON CONFLICT (org, email) DO UPDATE SET role = excluded.role",
            [org, email, role],
        )

    def apply_people(self, org: str, people: Iterable[tuple[str, str]]) -> None:
        """Make roles follow ``[[organizations.people]]`` where the config changed since
        it was last applied; roles changed since by transfer-ownership are kept."""
        wanted = {mail.lower(): role for mail, role in people}
        applied = {
            r[0]: r[1]
            for r in self.db.execute("SELECT email, role FROM people_applied WHERE org = ?", [org])
        }
        if wanted == applied:
            return
        for email, role in wanted.items():
            if applied.get(email) != role:
                if role == "owner":  # one owner: the config's new owner replaces the old
                    self.db.execute(
                        "UPDATE roles SET role = 'admin' WHERE org = ? AND role = 'owner'", [org]
                    )
                self.set_role(org, email, role)
        for email, role in applied.items():
            if email not in wanted and self.roles(org).get((org, email)) == role:
                self.set_role(org, email, None)
        self.db.execute("DELETE FROM people_applied WHERE org = ?", [org])
        self.db.conn.executemany(
            "INSERT INTO people_applied (org, email, role) VALUES (?, ?, ?)",
            [(org, e, r) for e, r in wanted.items()],
        )

    def other_cards(
        self, source: str, user_ids: Collection[str] | None = None
    ) -> frozenset[tuple[str, str]]:
        """(org, user_id) of cards that other organizations' integrations published
        (only those of ``user_ids``, when given)."""
        if user_ids is None:
            rows: Iterable[Any] = self.db.execute(
                "SELECT org, user_id FROM cards WHERE source IS NOT ?", [source]
            )
            return frozenset((r[0], r[1]) for r in rows)
        found: set[tuple[str, str]] = set()
        for part in _parts(list(user_ids)):
            rows = self.db.conn.execute(
                "SELECT org, user_id FROM cards WHERE source IS NOT ? "
                f"AND user_id IN ({', '.join('?' * len(part))})",
                [source, *part],
            )
            found.update((r[0], r[1]) for r in rows)
        return frozenset(found)

    # -- safety --------------------------------------------------------------------

    def quarantine(self, org: str) -> str | None:
        row = self.db.execute("SELECT quarantine FROM cursors WHERE org = ?", [org]).fetchone()
        return row[0] if row else None

    def set_quarantine(self, org: str, reason: str | None) -> None:
        self.db.execute(
            "INSERT INTO cursors (org, quarantine, saved_at) VALUES (?, ?, ?) "
            "ON CONFLICT (org) DO UPDATE SET quarantine = excluded.quarantine",
            [org, reason, now()],
        )

    def active_users(self, org: str) -> int:
        return int(
            self.db.execute(
                "SELECT count(*) FROM users WHERE org = ? AND removed IS NULL", [org]
            ).fetchone()[0]
        )

    # -- the cards ledger ----------------------------------------------------------

    def record_card(
        self,
        org: str,
        user_id: str,
        card_id: str,
        url: str,
        person: Person,
        fingerprint: str,
        active: bool,
        files: dict[str, str],
        photo_etag: str | None = None,
        source: str | None = None,
    ) -> None:
        """Record a published card. Its ``hash`` is the hash of the mirror row it was
        made from (the row of ``user_id`` in the ``source`` organization, read in the
        same run), so planning compares the two to find cards that are current; a
        card without a mirror row gets the hash of its canonical person."""
        person_json = person_to_json(person)
        stamp = now()
        source = source or org
        self.db.execute(
            "INSERT INTO cards (org, user_id, card_id, url, hash, fingerprint, active, "
            "display_name, upn, person, files, created_at, updated_at, photo_etag, source) "
            "VALUES (?, ?, ?, ?, coalesce((SELECT hash FROM users WHERE org = ? AND id = ?), ?), "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (org, user_id) DO UPDATE SET card_id = excluded.card_id, "
            "url = excluded.url, hash = excluded.hash, fingerprint = excluded.fingerprint, "
            "active = excluded.active, display_name = excluded.display_name, "
            "upn = excluded.upn, person = excluded.person, files = excluded.files, "
            "updated_at = excluded.updated_at, photo_etag = excluded.photo_etag",
            [
                org,
                user_id,
                card_id,
                url,
                source,
                user_id,
                content_hash(person_json),
                fingerprint,
                1 if active else 0,
                person.name,
                person.user_principal_name,
                person_json,
                json.dumps(files, sort_keys=True),
                stamp,
                stamp,
                photo_etag,
                source,
            ],
        )

    def forget_card(self, org: str, user_id: str) -> None:
        self.db.execute("DELETE FROM cards WHERE org = ? AND user_id = ?", [org, user_id])

    def cards(self, org: str | None = None) -> Iterator[LedgerCard]:
        sql = f"SELECT {_CARD_COLS} FROM cards c"
        params: list[Any] = []
        if org is not None:
            sql += " WHERE org = ?"
            params.append(org)
        sql += " ORDER BY c.org, c.display_name COLLATE NOCASE, c.user_id"
        for row in self.db.execute(sql, params):
            yield _card_from_row(row)

    def card_index(self, org: str) -> list[tuple[str, str]]:
        """(card_id, display name) of the org's active cards, sorted by name."""
        rows = self.db.execute(
            "SELECT card_id, display_name FROM cards WHERE org = ? AND active = 1 "
            "ORDER BY display_name COLLATE NOCASE, card_id",
            [org],
        )
        return [(r[0], r[1]) for r in rows]

    # -- counts and runs -----------------------------------------------------------

    def counts(self, org: str) -> dict[str, int]:
        users = self.db.execute(
            "SELECT count(*) FROM users WHERE org = ? AND removed IS NULL", [org]
        ).fetchone()[0]
        cards = self.db.execute("SELECT count(*) FROM cards WHERE org = ?", [org]).fetchone()[0]
        return {"users": users, "cards": cards}

    def start_run(self, org: str, mode: str) -> int:
        with self.db.atomic():
            cur = self.db.execute(
                "INSERT INTO runs (org, mode, started_at) VALUES (?, ?, ?)", [org, mode, now()]
            )
        return int(cur.lastrowid)

    def finish_run(
        self,
        run_id: int,
        result: str,
        counts: dict[str, int],
        error: str | None = None,
        holds: list[dict[str, Any]] | None = None,
    ) -> None:
        with self.db.atomic():
            self.db.execute(
                "UPDATE runs SET finished_at = ?, result = ?, counts = ?, error = ?, holds = ? "
                "WHERE id = ?",
                [now(), result, json.dumps(counts, sort_keys=True), error,
                 json.dumps(holds or [], ensure_ascii=False), run_id],
            )

    def last_run(self, org: str) -> RunRecord | None:
        row = self.db.execute(
            "SELECT id, org, mode, started_at, finished_at, result, counts, error, holds "
            "FROM runs WHERE org = ? AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1",
            [org],
        ).fetchone()
        if row is None:
            return None
        return RunRecord(
            row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]), row[7],
            json.loads(row[8]),
        )


_USER_COLS = (
    "u.org, u.id, u.person, u.hash, u.account_enabled, u.user_type, u.removed, "
    "p.etag, p.web, p.thumb"
)
_NULL_USER_COLS = "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
_CARD_COLS = (
    "c.org, c.user_id, c.card_id, c.url, c.hash, c.fingerprint, c.active, c.person, c.files, "
    "c.photo_etag"
)


_EMAIL = "lower(trim(coalesce(nullif(u.mail, ''), u.upn)))"


def _case(
    subject: str, mapping: Mapping[str, str], prefix: str, params: dict[str, Any], default: str
) -> str:
    """An SQL CASE mapping ``subject`` through ``mapping``, with bound parameters."""
    if not mapping:
        return default
    parts = []
    for i, (key, value) in enumerate(sorted(mapping.items())):
        params[f"{prefix}k{i}"], params[f"{prefix}v{i}"] = key, value
        parts.append(f"WHEN :{prefix}k{i} THEN :{prefix}v{i}")
    return f"(CASE {subject} {' '.join(parts)} ELSE {default} END)"


def _parts(keys: list[str], size: int = 500) -> Iterator[list[str]]:
    """``keys`` in slices small enough for one ``IN (...)`` of bound parameters."""
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


_UPSERT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)"
_UPSERT_PARAMS = _UPSERT_ROW.count("?")


@functools.cache
def _upsert_sql(rows: int) -> str:
    """Upsert ``rows`` mirror rows in one statement (the last row for an id wins)."""
    return (
        "INSERT INTO users (org, id, upn, mail, display_name, person, hash, "
        "account_enabled, user_type, removed, round, updated_at) "
        f"VALUES {', '.join([_UPSERT_ROW] * rows)} "
        "ON CONFLICT (org, id) DO UPDATE SET upn = excluded.upn, mail = excluded.mail, "
        "display_name = excluded.display_name, person = excluded.person, "
        "hash = excluded.hash, account_enabled = excluded.account_enabled, "
        "user_type = excluded.user_type, removed = NULL, "
        "round = coalesce(excluded.round, users.round), updated_at = excluded.updated_at"
    )


def _rows_per_statement(conn: sqlite3.Connection) -> int:
    """Rows per upsert statement, within this SQLite's limit on parameters (999
    before SQLite 3.32, 32,766 after)."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(UPSERT_ROWS, limit // _UPSERT_PARAMS))


def _mirror_from_row(row: Any, in_scope: bool = True) -> MirrorUser:
    return MirrorUser(
        org=row[0],
        id=row[1],
        person=stored_person(row[2]),
        hash=row[3],
        account_enabled=bool(row[4]),
        user_type=row[5],
        removed=row[6],
        photo=Photo(web=row[8], thumb=row[9], etag=row[7]) if row[7] else None,
        in_scope=in_scope,
    )


def _card_from_row(row: Any) -> LedgerCard:
    return LedgerCard(
        org=row[0],
        user_id=row[1],
        card_id=row[2],
        url=row[3],
        hash=row[4],
        fingerprint=row[5],
        active=bool(row[6]),
        person=person_from_json(row[7]),
        files=json.loads(row[8]),
        photo_etag=row[9],
    )


def open_state(path: Path) -> State:
    """Open (creating if needed) and migrate the state database at ``path``."""
    _import_sqlite_utils()
    from sqlite_utils import Database

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
        db = Database(conn, execute_plugins=False)
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        db.execute("PRAGMA foreign_keys=ON")
        _migrations().apply(db)
        _restore_steady_index(conn)
    except sqlite3.DatabaseError as exc:
        raise StateError(
            f"the state file {path} is not a usable cardsync database ({exc})",
            "restore it from a backup, or move it away to start over with a full sync",
        ) from exc
    except OSError as exc:
        raise StateError(
            f"cannot open the state file {path}: {exc.strerror}",
            "check [state] path and the folder's permissions",
        ) from exc
    return State(db, path)


def _restore_steady_index(conn: sqlite3.Connection) -> None:
    """Build the planning index if a first round was killed before it could (see
    STEADY_INDEX). A first round still being written holds the write lock, and builds
    the index itself when done: then leave it, at once."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'users_steady'"
    ).fetchone()
    if exists:
        return
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        conn.execute(STEADY_INDEX)
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def lock_for(state_path: Path) -> Lock:
    return Lock(Path(f"{state_path}.lock"))
