"""PhotoSync: keeps each organization's stored photos current, once per sync cycle.

Called by the Syncer after the pull and before planning (``cardsync.sync.PhotoRefresher``):

1. choose the users to check (:mod:`.schedule`): never checked, returned by the pull,
   and the rolling slice;
2. ask Graph for their photos' etags, and download only the photos whose etag is new
   (:mod:`cardsync.graph.photos`, 20 to a ``$batch``);
3. resize each new photo once (:mod:`.images`) and store it (:mod:`.store`).

The planner then republishes exactly the cards whose photo etag changed. Nothing here
fails a sync: a user whose photo cannot be used keeps the last good one (or the
initials avatar), and a missing permission or an unreachable Graph skips photos for
this run with one warning.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import Config, EntraConfig, OrgConfig
from ..errors import CardsyncError, ConsentError
from ..graph.photos import PERMISSION_HINT, Outcome, PhotoCheck, PhotoResult
from ..scope import in_scope_sql
from ..state import State
from . import schedule, store
from .images import BadImage, Resized, resize

if TYPE_CHECKING:
    from ..graph.photos import PhotoGraph
    from ..sync import Reporter

log = logging.getLogger("cardsync.photos")

USER_WARNINGS = 20  # per run and organization; more are counted in the summary


@dataclass
class PhotoReport:
    """What one refresh of one organization did."""

    users: int = 0  # present users in the mirror
    never: int = 0  # checked because never checked before
    changed: int = 0  # checked because the pull returned them
    rolling: int = 0  # checked on the rolling schedule
    unchanged: int = 0
    added: int = 0  # a photo where there was none
    replaced: int = 0  # a different photo
    removed: int = 0  # a photo is gone
    without: int = 0  # checked, no photo, none before
    unreadable: int = 0  # bytes that could not be decoded (previous photo kept)
    failed: int = 0  # checks that failed this time (retried next cycle)
    requests: int = 0  # Graph requests (batch items, retries included)
    by_kind: dict[str, int] | None = None
    batches: int = 0
    retried: int = 0
    guard_wait: float = 0.0
    seconds: float = 0.0  # wall time of the refresh
    skipped: str | None = None  # why photos were skipped this run

    @property
    def checked(self) -> int:
        return self.never + self.changed + self.rolling

    def summary(self) -> str:
        parts = [
            f"checked {self.checked} of {self.users} users ({self.never} never checked, "
            f"{self.changed} changed, {self.rolling} due for re-check)"
        ]
        found = [
            f"{n} {label}"
            for n, label in (
                (self.added, "added"),
                (self.replaced, "changed"),
                (self.removed, "removed"),
                (self.unchanged, "unchanged"),
                (self.without, "without a photo"),
                (self.unreadable, "unreadable"),
                (self.failed, "failed"),
            )
            if n
        ]
        if found:
            parts.append(", ".join(found))
        kinds = ", ".join(f"{k} {v}" for k, v in sorted((self.by_kind or {}).items()))
        requests = f"{self.requests} Graph requests" + (f" ({kinds})" if kinds else "")
        requests += f" in {self.batches} batch{'es' if self.batches != 1 else ''}"
        if self.retried:
            requests += f", {self.retried} throttled and retried"
        if self.guard_wait >= 1:
            requests += f", {self.guard_wait:.0f} s paused for Graph's photo rate limit"
        parts.append(requests)
        return "photos: " + "; ".join(parts) + f" ({self.seconds:.1f} s)"


def _graph_client(entra: EntraConfig) -> PhotoGraph:
    from ..graph.photos import PhotoGraph  # heavy: msgraph is imported only when needed

    return PhotoGraph(entra)


def _resize(data: bytes | None) -> Resized | BadImage:
    try:
        return resize(data or b"")
    except BadImage as exc:
        return exc


class PhotoSync:
    """Implements ``cardsync.sync.PhotoRefresher``. One Graph client per organization
    (its ``[organizations.photos]`` app registration, or its main one), kept until
    :meth:`close`, so a daemon reuses tokens, connections and the rate window."""

    def __init__(
        self,
        config: Config,
        reporter: Reporter | None = None,
        *,
        clients: Callable[[EntraConfig], Any] = _graph_client,
        workers: int | None = None,
    ) -> None:
        self.interval_minutes = config.schedule.interval_minutes
        self.reporter = reporter
        self.last: dict[str, PhotoReport] = {}  # org -> the last refresh's report
        self._make_client = clients
        self._clients: dict[str, Any] = {}
        self._workers = workers or min(4, os.cpu_count() or 1)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -- PhotoRefresher -------------------------------------------------------------------

    def refresh(
        self,
        org: OrgConfig,
        state: State,
        changed: set[str],
        dry_run: bool,
        *,
        rolling: bool = True,
    ) -> None:
        """Check and store the organization's photos. ``dry_run`` changes nothing here:
        photos go only to the state database, which the Syncer rolls back in a dry run.
        ``rolling=False`` checks the ``changed`` users only (provisioning one user on
        demand), not the never-checked ones nor the rolling slice."""
        settings = org.photos
        if not settings.enabled:
            if store.has_rows(state, org.slug):
                with state.transaction():
                    store.forget_org(state, org.slug)
                self._event(org.slug, "photos are turned off: cards show initials again")
            return
        report = self.last[org.slug] = PhotoReport()
        with state.transaction():
            store.forget_gone(state, org.slug)
        # Only users who can have a card: the scope and guest rules of cardsync.scope.
        users = store.users(state, org.slug, in_scope_sql(org.entra))
        report.users = len(users)
        size = schedule.slice_size(len(users), settings.refresh_days, self.interval_minutes)
        if not rolling:
            users = [user for user in users if user.user_id in changed]
            size = 0
        choice = schedule.choose(users, changed, size)
        report.never, report.changed = len(choice.never), len(choice.changed)
        report.rolling = len(choice.rolling)
        todo = choice.all()
        if not todo:
            return
        started = time.monotonic()
        try:
            self._check(org, state, todo, report)
        except ConsentError as exc:
            report.skipped = f"{exc.message}; {PERMISSION_HINT}"
        except CardsyncError as exc:
            report.skipped = str(exc)
        report.seconds = time.monotonic() - started
        if report.skipped:
            self._warn(org.slug, f"photos skipped this run: {report.skipped}")
        self._event(org.slug, report.summary())

    def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- steps ----------------------------------------------------------------------------

    def _check(
        self, org: OrgConfig, state: State, todo: list[store.Stored], report: PhotoReport
    ) -> None:
        client = self._client(org)
        stats = client.stats
        start = (stats.requests, dict(stats.items), stats.batches, stats.retried, stats.guard_wait)
        stored = {user.user_id: user for user in todo}
        checks = [PhotoCheck(user.user_id, user.known()) for user in todo]
        try:
            for results in client.check(checks):
                self._store(org.slug, state, results, stored, report)
        finally:
            report.requests = stats.requests - start[0]
            report.by_kind = {k: v - start[1].get(k, 0) for k, v in stats.items.items()}
            report.by_kind = {k: v for k, v in report.by_kind.items() if v}
            report.batches = stats.batches - start[2]
            report.retried = stats.retried - start[3]
            report.guard_wait = stats.guard_wait - start[4]

    def _store(
        self,
        org: str,
        state: State,
        results: Sequence[PhotoResult],
        stored: dict[str, store.Stored],
        report: PhotoReport,
    ) -> None:
        """Resize the chunk's new photos (in parallel: Pillow releases the GIL) and
        write the chunk in one transaction."""
        fetched = [r for r in results if r.outcome is Outcome.FETCHED]
        images = self._map(_resize, [r.data for r in fetched])
        resized = dict(zip((r.user_id for r in fetched), images, strict=True))
        now = store.stamp()
        fine: list[str] = []
        still_bad: list[str] = []
        with state.transaction():
            for result in results:
                uid = result.user_id
                before = stored[uid]
                if result.outcome is Outcome.KNOWN:
                    (fine if result.etag == before.etag else still_bad).append(uid)
                elif result.outcome is Outcome.ABSENT:
                    store.absent(state, org, uid, now)
                    if before.etag is not None:
                        report.removed += 1
                    else:
                        report.without += 1
                elif result.outcome is Outcome.FAILED:
                    report.failed += 1
                    store.failed(state, org, uid, result.error or "the check failed")
                    log.info("%s: photo check of user %s failed: %s", org, uid, result.error)
                else:
                    image = resized.get(uid)
                    if isinstance(image, Resized) and result.etag is not None:
                        store.save(state, org, uid, result.etag, image.web, image.thumb, now)
                        if before.etag is None:
                            report.added += 1
                        else:
                            report.replaced += 1
                        continue
                    reason = str(image) if isinstance(image, BadImage) else result.error or "?"
                    store.unreadable(state, org, uid, result.etag, reason, now)
                    self._unreadable(org, state, before, reason, report)
            store.unchanged(state, org, fine, now, clear=True)
            store.unchanged(state, org, still_bad, now, clear=False)
        report.unchanged += len(fine) + len(still_bad)

    def _unreadable(
        self, org: str, state: State, before: store.Stored, reason: str, report: PhotoReport
    ) -> None:
        report.unreadable += 1
        row = state.db.conn.execute(
            "SELECT upn FROM users WHERE org = ? AND id = ?", [org, before.user_id]
        ).fetchone()
        who = f"{row[0]} ({before.user_id})" if row and row[0] else before.user_id
        kept = "keeping the previous photo" if before.etag else "showing initials"
        message = f"photo of {who} from Microsoft Graph is unusable: {reason}; {kept}"
        log.info("%s: %s", org, message)
        if report.unreadable <= USER_WARNINGS:
            self._warn(org, message)
        elif report.unreadable == USER_WARNINGS + 1:
            self._warn(org, "more unusable photos: see the count in the photos summary")

    # -- helpers --------------------------------------------------------------------------

    def _client(self, org: OrgConfig) -> Any:
        if org.slug not in self._clients:
            self._clients[org.slug] = self._make_client(org.photos.entra or org.entra)
        return self._clients[org.slug]

    def _map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        if len(items) < 2 or self._workers < 2:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self._workers, thread_name_prefix="cardsync-photos"
            )
        return list(self._pool.map(fn, items))

    def _event(self, org: str, message: str) -> None:
        if self.reporter is not None:
            self.reporter.event(org, message)
        else:
            log.info("%s: %s", org, message)

    def _warn(self, org: str, message: str) -> None:
        if self.reporter is not None:
            self.reporter.event(org, message)
        else:
            log.warning("%s: %s", org, message)


__all__ = ["PERMISSION_HINT", "PhotoReport", "PhotoSync"]
