"""Sync scope: which of the tenant's users an organization publishes cards for.

``[organizations.entra] scope`` says, as Entra's own provisioning service does:

- ``"all"`` (the default): every user of the tenant;
- ``"assigned"``: users assigned to the organization's enterprise application, directly or
  as **immediate** members of an assigned group (nested groups are not expanded);
- ``"groups"``: immediate members of ``group_ids``.

Guests (``userType`` Guest) are left out unless ``include_guests = true``. Groups never
get cards: only ``#microsoft.graph.user`` members are recorded.

:class:`ScopeSync` (the :class:`~cardsync.sync.ScopeRefresher` of a cycle) keeps two
tables current; :func:`in_scope_sql` is how planning reads them.

``scope_members (org, user_id, via)``
    One row per way a user is in scope: ``via = 'direct'`` for a direct assignment, else
    the id of the group they are an immediate member of. A user is in scope when they
    have at least one row.

``scope_state (org, service_principal_id, groups, groups_delta_link, refreshed_at)``
    ``service_principal_id``: the enterprise application's id as looked up from the client
    id (NULL when the config names it). ``groups``: JSON list of the groups whose members
    are in scope. ``groups_delta_link``: JSON list of groups/delta rounds in progress,
    ``[{"groups": [ids], "link": deltaLink}, …]``: a deltaLink covers a fixed set of at
    most 50 groups (Graph's ``$filter`` limit, encoded in the link), and ``groups`` are
    the ones that round is responsible for.

Each cycle, for ``assigned``, appRoleAssignedTo is polled (it has no delta; one cheap
request per 999 assignments). Group membership follows groups/delta from the stored
deltaLinks, so an unchanged group costs nothing but one request per 50 groups. A group
newly in scope gets a full groups/delta round of its own (its members are listed once);
a group leaving scope loses its rows and is ignored from then on; an expired deltaLink
restarts its round in full and replaces the rows of its groups. Rounds are read first
and written in one transaction at the end, so a failure leaves the previous scope and
links in place and the next cycle repeats the reads (deltaLinks can be reused).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from .config import EntraConfig, OrgConfig
from .errors import DeltaExpiredError, GraphError
from .state import State, now

if TYPE_CHECKING:
    from .graph.scope import Assignment, MembershipRound
    from .sync import Reporter, Source

log = logging.getLogger("cardsync.scope")

DIRECT = "direct"
# Graph's limit of OR-ed ids in a delta $filter (as cardsync.graph.scope, which this
# module does not import: planning imports in_scope_sql, and graph pulls in asyncio/ssl).
MAX_GROUPS_PER_ROUND = 50
# Rounds beyond ceil(groups / 50) that may accumulate (one per batch of newly tracked
# groups) before all rounds are restarted as few full ones.
EXTRA_ROUNDS = 3

_IN_SCOPE = "EXISTS (SELECT 1 FROM scope_members s WHERE s.org = u.org AND s.user_id = u.id)"
_NOT_GUEST = "lower(u.user_type) != 'guest'"


def in_scope_sql(entra: EntraConfig) -> str:
    """An SQL boolean expression over the users table aliased ``u``: true when the user is
    in the organization's sync scope.

    - ``scope = "all"``: every user (``1``);
    - ``"assigned"`` / ``"groups"``: the user has a ``scope_members`` row;
    - and, unless ``include_guests``, the user is not a guest. Graph spells ``userType``
      "Guest" and "Member"; the comparison ignores case.

    The expression is parenthesized and has no parameters, e.g.
    ``f"SELECT … FROM users u WHERE u.org = ? AND {in_scope_sql(org.entra)}"``.
    It says nothing about removed or disabled users: that is the planner's business.
    """
    parts = [] if entra.scope == "all" else [_IN_SCOPE]
    if not entra.include_guests:
        parts.append(_NOT_GUEST)
    return f"({' AND '.join(parts)})" if parts else "1"


class ScopeSource(Protocol):
    """What ScopeSync needs from a source (cardsync.graph.GraphSource has these)."""

    def service_principal_id(self, app_id: str) -> str | None: ...

    def app_assignments(self, sp_id: str) -> list[Assignment] | None: ...

    def group_members_delta(
        self, group_ids: Sequence[str], link: str | None
    ) -> MembershipRound: ...


@dataclass
class _Round:
    """A groups/delta round: the groups it answers for, and where it resumes."""

    groups: list[str]
    link: str | None = None


@dataclass
class _Stored:
    service_principal_id: str | None = None
    groups: list[str] = field(default_factory=list)
    rounds: list[_Round] = field(default_factory=list)


@dataclass(frozen=True)
class ScopeReport:
    """What one refresh of one organization did."""

    org: str
    users: int  # users with at least one scope_members row (guests and strangers included)
    direct: int  # users assigned directly
    groups: int  # groups whose members are in scope
    entered: int  # users in scope now and not before
    left: int  # users in scope before and not now
    full_rounds: int  # groups/delta rounds that listed every member
    incremental_rounds: int  # groups/delta rounds from a stored deltaLink


class ScopeSync:
    """The ScopeRefresher of a sync cycle (see :class:`cardsync.sync.ScopeRefresher`).

    ``reports`` keeps the last :class:`ScopeReport` per organization slug."""

    def __init__(self, reporter: Reporter | None = None) -> None:
        self.reporter = reporter
        self.reports: dict[str, ScopeReport] = {}

    def refresh(self, org: OrgConfig, state: State, source: Source, dry_run: bool) -> None:
        """Bring ``scope_members`` and ``scope_state`` of ``org`` up to date. Reads Graph
        first, then writes everything in one transaction (inside the dry-run transaction
        the Syncer rolls back, when ``dry_run``). Raises CardsyncError (ConsentError for
        a missing permission): the cycle must not plan with a scope it could not read."""
        entra = org.entra
        if entra.scope == "all":
            with state.transaction():
                _forget(state, org.slug)
            return
        graph = cast(ScopeSource, source)
        stored = _load(state, org.slug)
        looked_up = None
        if entra.scope == "assigned":
            looked_up, assignments = _assignments(entra, stored.service_principal_id, graph)
            direct = {a.principal_id for a in assignments if a.principal_type == "User"}
            groups = {a.principal_id for a in assignments if a.principal_type == "Group"}
        else:
            direct, groups = set(), set(entra.group_ids)
        rounds = _plan_rounds(stored.rounds, groups)
        results = [_read_round(graph, r) for r in rounds]
        with state.transaction():
            before = _users_in_scope(state, org.slug)
            _write_direct(state, org.slug, direct)
            _drop_untracked(state, org.slug, groups)
            for r, result in zip(rounds, results, strict=True):
                _apply_round(state, org.slug, r, result)
            after = _users_in_scope(state, org.slug)
            kept = [r for r in rounds if r.groups]
            _save(state, org.slug, looked_up, sorted(groups), kept)
        full = sum(1 for result in results if result.full)
        report = ScopeReport(
            org.slug,
            users=len(after),
            direct=len(direct),
            groups=len(groups),
            entered=len(after - before),
            left=len(before - after),
            full_rounds=full,
            incremental_rounds=len(results) - full,
        )
        self.reports[org.slug] = report
        self._tell(report)

    def _tell(self, report: ScopeReport) -> None:
        message = (
            f"scope: {report.users} users in scope ({report.direct} assigned directly, "
            f"{report.groups} groups); {report.entered} entered, {report.left} left"
        )
        log.info("%s: %s", report.org, message)
        if self.reporter is not None and (report.entered or report.left or report.full_rounds):
            self.reporter.event(report.org, message)


# -- reading -----------------------------------------------------------------------------


def _assignments(
    entra: EntraConfig, stored: str | None, graph: ScopeSource
) -> tuple[str | None, list[Assignment]]:
    """(the service principal id to remember, or None when configured; the assignments)."""
    if entra.service_principal_id:
        found = graph.app_assignments(entra.service_principal_id)
        if found is None:
            raise GraphError(
                f"tenant {entra.tenant_id} has no enterprise application (service principal) "
                f"{entra.service_principal_id}",
                "check service_principal_id: the Object ID on the enterprise application's "
                "Overview page (not the Application ID), or remove it to look it up",
            )
        return None, found
    sp_id = stored or _look_up(entra, graph)
    found = graph.app_assignments(sp_id)
    if found is None and stored is not None:  # deleted and re-created since: look again
        sp_id = _look_up(entra, graph)
        found = graph.app_assignments(sp_id)
    if found is None:
        raise GraphError(
            f"Microsoft Graph lost the enterprise application {sp_id} of app {entra.client_id}",
            "run again; if it persists, set service_principal_id",
        )
    return sp_id, found


def _look_up(entra: EntraConfig, graph: ScopeSource) -> str:
    sp_id = graph.service_principal_id(entra.client_id)
    if sp_id is None:
        raise GraphError(
            f"tenant {entra.tenant_id} has no enterprise application (service principal) for "
            f"app {entra.client_id}, so no one can be assigned to it",
            "grant the app admin consent in this tenant (that creates the enterprise "
            'application), assign users and groups to it, or use scope = "groups"',
        )
    return sp_id


def _plan_rounds(stored: Sequence[_Round], groups: Iterable[str]) -> list[_Round]:
    """The groups/delta rounds to run: stored ones narrowed to the groups still tracked
    (a group answered by two rounds stays with the first), then full rounds for groups
    no round answers for. Too many rounds: start over with as few as possible."""
    tracked = set(groups)
    rounds: list[_Round] = []
    owned: set[str] = set()
    for r in stored:
        mine = [g for g in r.groups if g in tracked and g not in owned]
        if mine and r.link:
            rounds.append(_Round(mine, r.link))
            owned.update(mine)
    rounds += [_Round(chunk) for chunk in _chunks(sorted(tracked - owned))]
    if len(rounds) > math.ceil(len(tracked) / MAX_GROUPS_PER_ROUND) + EXTRA_ROUNDS:
        log.info("restarting %d groups/delta rounds as full rounds", len(rounds))
        rounds = [_Round(chunk) for chunk in _chunks(sorted(tracked))]
    return rounds


def _chunks(items: Sequence[str]) -> list[list[str]]:
    return [
        list(items[i : i + MAX_GROUPS_PER_ROUND])
        for i in range(0, len(items), MAX_GROUPS_PER_ROUND)
    ]


def _read_round(graph: ScopeSource, r: _Round) -> MembershipRound:
    if r.link is None:
        return graph.group_members_delta(r.groups, None)
    try:
        return graph.group_members_delta(r.groups, r.link)
    except DeltaExpiredError:
        log.info("groups deltaLink rejected: listing the members of %d groups", len(r.groups))
        return graph.group_members_delta(r.groups, None)


# -- writing -----------------------------------------------------------------------------


def _users_in_scope(state: State, org: str) -> set[str]:
    rows = state.db.execute("SELECT DISTINCT user_id FROM scope_members WHERE org = ?", [org])
    return {row[0] for row in rows}


def _write_direct(state: State, org: str, direct: set[str]) -> None:
    conn = state.db.conn
    rows = conn.execute(
        "SELECT user_id FROM scope_members WHERE org = ? AND via = ?", [org, DIRECT]
    )
    existing = {row[0] for row in rows}
    conn.executemany(
        "DELETE FROM scope_members WHERE org = ? AND user_id = ? AND via = ?",
        [(org, uid, DIRECT) for uid in existing - direct],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO scope_members (org, user_id, via) VALUES (?, ?, ?)",
        [(org, uid, DIRECT) for uid in direct - existing],
    )


def _drop_untracked(state: State, org: str, groups: set[str]) -> None:
    conn = state.db.conn
    rows = conn.execute(
        "SELECT DISTINCT via FROM scope_members WHERE org = ? AND via != ?", [org, DIRECT]
    )
    gone = [row[0] for row in rows if row[0] not in groups]
    conn.executemany(
        "DELETE FROM scope_members WHERE org = ? AND via = ?", [(org, gid) for gid in gone]
    )


def _apply_round(state: State, org: str, r: _Round, result: MembershipRound) -> None:
    """Apply a round's entries, in Graph's order, to the groups ``r`` answers for. A full
    round replaces their rows. A group deleted in an incremental round loses its rows and
    is listed in full next cycle (should it come back restored, all its members count)."""
    conn = state.db.conn
    mine = set(r.groups)
    if result.full:
        conn.executemany(
            "DELETE FROM scope_members WHERE org = ? AND via = ?", [(org, g) for g in mine]
        )
    for change in result.changes:
        gid = change.group_id
        if gid not in mine:
            continue  # a group this round's filter still names but no longer answers for
        if change.deleted is not None:
            conn.execute("DELETE FROM scope_members WHERE org = ? AND via = ?", [org, gid])
            if not result.full:
                mine.discard(gid)
            continue
        conn.executemany(
            "INSERT OR IGNORE INTO scope_members (org, user_id, via) VALUES (?, ?, ?)",
            [(org, uid, gid) for uid in change.added],
        )
        conn.executemany(
            "DELETE FROM scope_members WHERE org = ? AND user_id = ? AND via = ?",
            [(org, uid, gid) for uid in change.removed],
        )
    r.groups = [g for g in r.groups if g in mine]
    r.link = result.delta_link


def _forget(state: State, org: str) -> None:
    state.db.execute("DELETE FROM scope_members WHERE org = ?", [org])
    state.db.execute("DELETE FROM scope_state WHERE org = ?", [org])


def _load(state: State, org: str) -> _Stored:
    row = state.db.execute(
        "SELECT service_principal_id, groups, groups_delta_link FROM scope_state WHERE org = ?",
        [org],
    ).fetchone()
    if row is None:
        return _Stored()
    return _Stored(row[0], _json_list(row[1]), _rounds(row[2]))


def _json_list(text: str | None) -> list[str]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _rounds(text: str | None) -> list[_Round]:
    """Stored rounds; anything unreadable is dropped (its groups get a full round)."""
    try:
        value: Any = json.loads(text or "[]")
    except ValueError:
        return []
    rounds = []
    for item in value if isinstance(value, list) else ():
        if isinstance(item, dict) and isinstance(item.get("link"), str):
            groups = [g for g in item.get("groups") or () if isinstance(g, str)]
            rounds.append(_Round(groups, item["link"]))
    return rounds


def _save(
    state: State, org: str, sp_id: str | None, groups: list[str], rounds: list[_Round]
) -> None:
    links = json.dumps([{"groups": r.groups, "link": r.link} for r in rounds])
    state.db.execute(
        "INSERT INTO scope_state (org, service_principal_id, groups, groups_delta_link, "
        "refreshed_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (org) DO UPDATE SET "
        "service_principal_id = excluded.service_principal_id, groups = excluded.groups, "
        "groups_delta_link = excluded.groups_delta_link, refreshed_at = excluded.refreshed_at",
        [org, sp_id, json.dumps(groups), links, now()],
    )


__all__ = ["DIRECT", "ScopeReport", "ScopeSource", "ScopeSync", "in_scope_sql"]
