"""One sync cycle: the only module that wires source, state, planner and backend.

For each organization, independently (one failing does not stop the others):

1. pull users/delta from the stored deltaLink into the mirror, page by page
   (a rejected link falls back to a full round, followed by a sweep of users the
   full round no longer returned);
2. plan against the ledger;
3. apply through the backend (unless this is a dry run, in which case every
   write of steps 1-3 is rolled back and the plan is the answer).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import backends, plans
from .actionlog import ActionLog
from .apply import Applier, ApplyReport
from .backends import Backend
from .config import Config, OrgConfig
from .errors import CardsyncError, DeltaExpiredError, SafetyLimitError, UsageError
from .models import DeltaEntry, DeltaPage, DirectoryUser, Removal
from .planner import Action, ActionRecord, PlanContext, record
from .plans import Plan
from .scope import in_scope_sql
from .state import State
from .workers import BackendSpec, PublishPool, worker_count


class Source(Protocol):
    """What sync needs from a directory source (cardsync.graph.GraphSource)."""

    def delta(self, link: str | None) -> Iterator[DeltaPage]: ...

    def deleted_item_exists(self, user_id: str) -> bool: ...

    def get_user(self, key: str) -> DirectoryUser | None: ...

    def close(self) -> None: ...


class PhotoRefresher(Protocol):
    """Keeps the stored photos of an organization current (cardsync.photos).

    Called after the pull and before planning, with the ids of the users the pull
    returned (photo changes never appear in users/delta: the refresher adds its own
    rolling re-checks). It writes the ``photos`` table; the planner then republishes
    cards whose photo etag changed. It must not raise for per-user problems."""

    def refresh(
        self, org: OrgConfig, state: State, changed: set[str], dry_run: bool,
        *, rolling: bool = True,
    ) -> None: ...


# A full read returning fewer than this share of the users the state holds trips the
# safety limit, as an empty read does.
FULL_READ_FLOOR = 0.5

# Delta pages merged in one transaction: at least this many entries. A commit rewrites
# most pages of the random-id indexes it touched, so at tenant scale fewer is faster
# (every 200-user page on its own: ~20 s per 100,000 users; every 2,000: ~0.6 s).
# Nothing is lost by committing late: the deltaLink is saved with a round's last page
# only, so a killed pull replays its round from the stored link.
INGEST_BATCH = 100_000


class ScopeRefresher(Protocol):
    """Keeps the ``scope_members`` table of an organization current (cardsync.scope).

    Called after the pull and before planning. For ``scope = "all"`` it does nothing;
    for ``assigned`` and ``groups`` it records who is in scope, reading what changed
    (assignments are polled, group memberships follow groups/delta)."""

    def refresh(self, org: OrgConfig, state: State, source: Source, dry_run: bool) -> None: ...


class Reporter:
    """Progress callbacks; the CLI renders them as rich progress or plain lines."""

    def event(self, org: str, message: str) -> None:
        """A noteworthy step, one line."""

    def pulled(self, org: str, users: int, removals: int) -> None:
        """Running totals while delta pages arrive."""

    def applying(self, org: str, total: int) -> None:
        """Apply is starting ``total`` actions."""

    def applied(self, org: str, action: Action) -> None:
        """One action was attempted."""


@dataclass
class OrgOutcome:
    """What a cycle did for one organization. ``actions`` is the plan, in order: for a
    dry run the actions themselves (the plan is the answer), for a run an
    :class:`~cardsync.planner.ActionRecord` of each (no card content). Both lists are
    :class:`~cardsync.actionlog.ActionLog` objects, which keep all but the first few
    thousand on disk: a run over a whole tenant does not hold a record per user."""

    org: str
    result: str = "success"  # success | partial | refused | failed
    mode: str = "incremental"  # initial | incremental | resync
    actions: ActionLog = field(default_factory=ActionLog)
    report: ApplyReport | None = None
    pulled: int = 0
    removals: int = 0
    error: CardsyncError | None = None
    refused: ActionLog = field(default_factory=ActionLog)  # held back
    notes: list[str] = field(default_factory=list)  # e.g. seat limits reached

    def counts(self) -> dict[str, int]:
        counts = {"pulled": self.pulled, "removals": self.removals}
        if self.report is not None:
            counts.update(self.report.done)
            counts["failed"] = len(self.report.failures)
        for kind in ("hold", "wait"):
            if self.actions.count(kind):
                counts[kind] = self.actions.count(kind)
        if self.refused:
            counts["refused"] = len(self.refused)
        return counts


SourceFactory = Callable[[OrgConfig], Source]


class Syncer:
    """Runs sync cycles for the configured organizations.

    ``sources`` builds one Source per organization; sources are kept for the
    Syncer's lifetime so that a daemon reuses tokens and connections. With
    ``workers`` (how to build more instances of ``backend``) and a parallel-safe
    backend, big plans are published by worker processes (cardsync.workers)."""

    def __init__(
        self,
        config: Config,
        state: State,
        backend: Backend,
        sources: SourceFactory,
        reporter: Reporter | None = None,
        photos: PhotoRefresher | None = None,
        scope: ScopeRefresher | None = None,
        workers: BackendSpec | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.backend = backend
        self.workers = workers
        self._make_source = sources
        self._sources: dict[str, Source] = {}
        self.reporter = reporter or Reporter()
        self.photos = photos
        self.scope = scope

    def source(self, org: OrgConfig) -> Source:
        if org.slug not in self._sources:
            self._sources[org.slug] = self._make_source(org)
        return self._sources[org.slug]

    def close(self) -> None:
        for source in self._sources.values():
            source.close()
        self._sources.clear()

    def cycle(
        self,
        *,
        dry_run: bool = False,
        orgs: Sequence[str] | None = None,
        allow_deletes: bool = False,
    ) -> list[OrgOutcome]:
        outcomes = []
        for org in self.config.organizations:
            if orgs and org.slug not in orgs:
                continue
            outcomes.append(
                self.sync_org(org, dry_run=dry_run, allow_deletes=allow_deletes)
            )
        return outcomes

    def sync_org(
        self, org: OrgConfig, *, dry_run: bool = False, allow_deletes: bool = False
    ) -> OrgOutcome:
        outcome = OrgOutcome(org.slug)
        run_id = None if dry_run else self.state.start_run(org.slug, "run")
        if dry_run:
            self.state.db.begin()
        try:
            with self.state.transaction():
                for each in self.config.organizations:
                    self.state.apply_people(each.slug, ((p.mail, p.role) for p in each.people))
            changed = self._pull(org, outcome)
            if self.scope is not None:
                self.scope.refresh(org, self.state, self.source(org), dry_run)
            if self.photos is not None:
                self.photos.refresh(org, self.state, changed, dry_run)
            with self._plan(org) as plan:
                hold = self._check_safety(org, outcome, plan, allow_deletes)
                if dry_run:
                    deque(self._report(outcome, plan, hold, keep=True), maxlen=0)
                else:
                    self._apply(org, outcome, plan, hold)
            self._note_waits(outcome)
        except CardsyncError as exc:
            outcome.result = "failed"
            outcome.error = exc
            self.reporter.event(org.slug, f"failed: {exc.message}")
        finally:
            if dry_run:
                self.state.db.rollback()
        if run_id is not None:
            self.state.finish_run(
                run_id,
                outcome.result,
                outcome.counts(),
                outcome.error.message if outcome.error else None,
                holds=[describe(a) for a in outcome.actions if a.kind == "hold"]
                if outcome.actions.count("hold")
                else [],
            )
        return outcome

    def provision(self, org: OrgConfig, key: str) -> OrgOutcome:
        """Provisioning on demand: read one user (object id, UPN or mail) from Graph
        now and apply every rule to them, without touching the deltaLink."""
        outcome = OrgOutcome(org.slug, mode="on-demand")
        source = self.source(org)
        found = source.get_user(key)
        with self.state.transaction():
            if found is not None:
                self.state.ingest(org.slug, [found])
                user_id = found.id
            else:
                user_id = self.state.find_user(org.slug, key) or key
                if self.state.mirror_user(org.slug, user_id) is None:
                    raise UsageError(
                        f"no user {key!r} in Entra ID for organization {org.slug}",
                        "give the object id, userPrincipalName or mail of a user in the tenant",
                    )
                reason = "changed" if source.deleted_item_exists(user_id) else "deleted"
                self.state.mark_removed(org.slug, [user_id], reason)
        outcome.pulled = 1 if found else 0
        if self.scope is not None:
            self.scope.refresh(org, self.state, source, False)
        if self.photos is not None and found is not None:
            self.photos.refresh(org, self.state, {user_id}, False, rolling=False)
        ctx = self._context(org)
        rows = self.state.plan_rows(
            org.slug, ctx.fingerprints,
            in_scope=in_scope_sql(org.entra),
            routes=ctx.routes, everything=True, user_id=user_id,
        )
        with plans.make(self.state, ctx, rows) as plan:
            hold = self._check_safety(org, outcome, plan, allow_deletes=False)
            self._apply(org, outcome, plan, hold)
        self._note_waits(outcome)
        return outcome

    # -- steps ---------------------------------------------------------------------

    def _pull(self, org: OrgConfig, outcome: OrgOutcome) -> set[str]:
        """Merge this round of users/delta into the mirror; the ids it returned."""
        source = self.source(org)
        changed: set[str] = set()
        link = self.state.delta_link(org.slug)
        outcome.mode = "initial" if link is None else "incremental"
        pages = _first_page_checked(source, link)
        if pages is None:
            self.reporter.event(
                org.slug, "the stored deltaLink was rejected by Graph: running a full sync"
            )
            outcome.mode = "resync"
            pages = source.delta(None)
        round_id = uuid.uuid4().hex if outcome.mode != "incremental" else None
        before = self.state.active_users(org.slug) if round_id else 0
        # A full round sweeps the users it did not return; into an empty mirror there
        # can be none.
        sweep = round_id is not None and before > 0
        with self.state.bulk_writes(), self.state.first_round(org.slug):
            self._ingest_round(org, source, outcome, pages, round_id, changed, sweep)
        if before and len(changed) < before * FULL_READ_FLOOR:
            # An empty or shrunken full read is more likely a permission or scope
            # mistake than a mass departure: hold the deletions it would cause.
            self.state.set_quarantine(
                org.slug,
                f"a full read returned {len(changed)} users where the state holds {before}",
            )
        return changed

    def _ingest_round(
        self,
        org: OrgConfig,
        source: Source,
        outcome: OrgOutcome,
        pages: Iterable[DeltaPage],
        round_id: str | None,
        changed: set[str],
        sweep: bool,
    ) -> None:
        seen = [0, 0]  # users and removals handed to the state so far, for progress
        for group in _grouped(pages, INGEST_BATCH):
            last: list[str] = []
            with self.state.transaction():
                # Page by page: each page's rows are written while Graph works on the
                # next page (the Graph source's event loop is not running meanwhile).
                for entries in self._entries(org, group, changed, last, seen):
                    users, removals = self.state.ingest(org.slug, entries, round_id)
                    outcome.pulled += users
                    outcome.removals += removals
                if last:
                    if sweep and round_id is not None:
                        self._sweep(org, source, round_id)
                    self.state.save_delta_link(org.slug, last[-1])
            self.reporter.pulled(org.slug, outcome.pulled, outcome.removals)

    def _entries(
        self,
        org: OrgConfig,
        pages: Iterator[DeltaPage],
        changed: set[str],
        last: list[str],
        seen: list[int],
    ) -> Iterator[tuple[DeltaEntry, ...]]:
        """The entries of each page of a group, noting the ids returned, progress, and
        the deltaLink in ``last``."""
        for page in pages:
            ids = [e.id for e in page.entries if not isinstance(e, Removal)]
            changed.update(ids)
            yield page.entries
            seen[0] += len(ids)
            seen[1] += len(page.entries) - len(ids)
            self.reporter.pulled(org.slug, seen[0], seen[1])
            if page.delta_link is not None:
                last.append(page.delta_link)

    def _sweep(self, org: OrgConfig, source: Source, round_id: str) -> None:
        """After a full round: users it no longer returned are gone. Deleted items
        tells a soft delete (restorable) from a permanent one."""
        gone = self.state.unseen_in_round(org.slug, round_id)
        if not gone:
            return
        soft = [uid for uid in gone if source.deleted_item_exists(uid)]
        soft_set = set(soft)
        hard = [uid for uid in gone if uid not in soft_set]
        self.state.mark_removed(org.slug, soft, "changed")
        self.state.mark_removed(org.slug, hard, "deleted")
        self.reporter.event(
            org.slug,
            f"full sync: {len(hard)} users permanently gone, {len(soft)} soft-deleted",
        )

    def _context(self, org: OrgConfig) -> PlanContext:
        """The planning context without the members and cards of particular users:
        :func:`cardsync.plans.make` adds those per chunk of rows."""
        orgs = self.config.organizations
        routes = (
            {domain: o.slug for o in orgs for domain in o.domains}
            if self.config.domain_assignment
            else {}
        )
        return PlanContext(
            source=org.slug,
            card_key=self.state.card_key(),
            fingerprints={o.slug: self.backend.fingerprint(o.slug) for o in orgs},
            on_disable={o.slug: o.on_disable for o in orgs},
            routes=routes,
            roles=self.state.roles(),
            seats={o.slug: o.seats for o in orgs},
            seats_used={o.slug: self.state.seats_used(o.slug) for o in orgs if o.seats is not None},
        )

    def _plan(self, org: OrgConfig) -> Plan:
        ctx = self._context(org)
        rows = self.state.plan_rows(
            org.slug,
            ctx.fingerprints,
            in_scope=in_scope_sql(org.entra),
            routes=ctx.routes,
        )
        return plans.make(self.state, ctx, rows)

    def _check_safety(
        self, org: OrgConfig, outcome: OrgOutcome, plan: Plan, allow_deletes: bool
    ) -> bool:
        """Accidental-deletion prevention, as in Entra Connect: too many deletes and
        deactivations in one cycle (or a suspiciously small full read) put the
        organization in quarantine; destructive actions then wait for --allow-deletes.
        Returns whether the plan's destructive actions are held back."""
        if plan.destructive > org.max_deletes:
            self.state.set_quarantine(
                org.slug,
                f"{plan.destructive} deletions and deactivations in one cycle exceed "
                f"max_deletes ({org.max_deletes})",
            )
        reason = self.state.quarantine(org.slug)
        if reason is None:
            return False
        if allow_deletes:
            self.state.set_quarantine(org.slug, None)
            self.reporter.event(org.slug, f"--allow-deletes given: applying ({reason})")
            return False
        if not plan.destructive:
            return False
        outcome.result = "refused"
        outcome.error = SafetyLimitError(
            f"{reason}: nothing was deleted or deactivated",
            "check the planned changes with `cardsync diff`; if they are right, run "
            "`cardsync run --allow-deletes`",
        )
        return True

    def _report(
        self, outcome: OrgOutcome, plan: Plan, hold: bool, keep: bool = False
    ) -> Iterator[Action]:
        """The plan's actions to apply, in order, listing each in ``outcome`` (itself
        with ``keep``, else its record), and the destructive ones in
        ``outcome.refused`` too when they are held back."""
        for action in plan:
            summary = action if keep else record(action)
            outcome.actions.append(summary)
            if hold and action.destructive:
                outcome.refused.append(summary)
            elif action.applied:
                yield action

    def _apply(self, org: OrgConfig, outcome: OrgOutcome, plan: Plan, hold: bool) -> None:
        self.reporter.applying(org.slug, plan.applied(hold))
        publishes = sum(n for kind, n in plan.counts.items()
                        if kind not in ("delete_card", "delete_user", "hold"))
        touched: set[str] = {org.slug}
        index_changed = outcome.mode != "incremental"

        def step(action: Action, ok: bool) -> None:
            nonlocal index_changed
            touched.add(action.org)
            if getattr(action, "from_org", ""):
                touched.add(action.from_org)  # type: ignore[attr-defined]
            index_changed |= ok and _changes_index(action)
            self.reporter.applied(org.slug, action)

        pool = self._pool(publishes)
        if pool is not None:
            self.reporter.event(org.slug, f"publishing with {pool.workers} worker processes")
        try:
            applier = Applier(
                self.backend,
                self.state,
                org.slug,
                {o.slug: self.backend.fingerprint(o.slug) for o in self.config.organizations},
                pool=pool,
            )
            report = applier.run(self._report(outcome, plan, hold), on_step=step)
        finally:
            if pool is not None:
                pool.close()
        outcome.report = report
        if index_changed:
            for slug in sorted(touched):
                self.backend.finish(slug, self.state.card_index(slug))
        if report.failures and outcome.result == "success":
            outcome.result = "partial"

    def _pool(self, publishes: int) -> PublishPool | None:
        """Worker processes for a plan with many cards to render, when the backend
        allows it and there is more than one core (cardsync.workers.worker_count)."""
        if self.workers is None or not backends.parallel_safe(self.backend):
            return None
        count = worker_count(publishes)
        return PublishPool.start(self.workers, count) if count else None

    def _note_waits(self, outcome: OrgOutcome) -> None:
        if not outcome.actions.count("wait"):
            return
        waits = [a for a in outcome.actions if a.kind == "wait"]
        by_org: dict[str, int] = {}
        for a in waits:
            by_org[a.org] = by_org.get(a.org, 0) + 1
        for slug, count in sorted(by_org.items()):
            limit = self.config.org(slug).seats
            outcome.notes.append(
                f"seat limit reached ({limit}/{limit}) in {slug}: {count} users waiting"
            )
        if outcome.result == "success":
            outcome.result = "partial"


def _grouped(pages: Iterable[DeltaPage], entries: int) -> Iterator[Iterator[DeltaPage]]:
    """Consecutive pages holding at least ``entries`` entries (the last group: the
    rest), each group itself streamed: a page is handed on as soon as it arrives, so
    storing it overlaps with fetching the next ones. Consume each group to its end
    before taking the next."""
    source = iter(pages)
    done = False

    def group(first: DeltaPage) -> Iterator[DeltaPage]:
        nonlocal done
        held = len(first.entries)
        yield first
        while held < entries:
            page = next(source, None)
            if page is None:
                done = True
                return
            held += len(page.entries)
            yield page

    while not done:
        first = next(source, None)
        if first is None:
            return
        yield group(first)


def _first_page_checked(source: Source, link: str | None) -> Iterator[DeltaPage] | None:
    """Start a delta round; None when the stored link was rejected (expired)."""
    pages = source.delta(link)
    try:
        first = next(pages)
    except DeltaExpiredError:
        if link is None:
            raise
        return None
    except StopIteration:
        return iter(())

    def chained() -> Iterator[DeltaPage]:
        yield first
        yield from pages

    return chained()


def exit_code(outcomes: Sequence[OrgOutcome]) -> int:
    """The most serious outcome wins: failed (1), refused (3), partial (4), success (0)."""
    results = {o.result for o in outcomes}
    if "failed" in results:
        return 1
    if "refused" in results:
        return 3
    if "partial" in results:
        return 4
    return 0


# Fields of a person that make up the name an organization's index lists.
_NAME_FIELDS = frozenset({"display_name", "given_name", "surname", "user_principal_name"})


def _changes_index(action: Action) -> bool:
    """Whether an applied action can change what the organization's index shows: all
    but profile updates that leave the name alone (an update without changed fields
    comes from a template or site change, which may change the index too)."""
    changed = getattr(action, "changed", ())
    return action.kind != "update_card" or not changed or bool(_NAME_FIELDS & set(changed))


def describe(action: Action | ActionRecord) -> dict[str, Any]:
    """The public JSON shape of an action (``diff --json``)."""
    if not isinstance(action, ActionRecord):
        action = record(action)
    data: dict[str, Any] = {
        "org": action.org,
        "action": action.kind,
        "user_id": action.user_id,
        "user_principal_name": action.user_principal_name,
        "reason": action.reason,
    }
    if action.display_name is not None:
        data["display_name"] = action.display_name
    if action.card_id:
        data["card_id"] = action.card_id
    if action.changed:
        data["changed"] = list(action.changed)
    if action.from_org:
        data["from_org"] = action.from_org
    return data
