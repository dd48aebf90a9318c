"""``cardsync run --daemon``: sync every ``[schedule] interval_minutes`` (default 40,
Entra's own provisioning interval) with APScheduler.

One Syncer lives for the daemon's lifetime so Graph tokens and connections are
reused across cycles. The run lock is taken per cycle, so ``diff`` and
``provision`` can run between cycles; overlapping cycles are skipped
(``max_instances=1``) and missed ones coalesce into one.
"""

from __future__ import annotations

import datetime
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .config import Config
from .errors import CardsyncError, LockedError
from .output import PlainReporter, outcome_summary

log = logging.getLogger("cardsync.daemon")


def run_daemon(config: Config, orgs: Sequence[str] | None = None) -> None:
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    from . import service

    interval = config.schedule.interval_minutes
    reporter = PlainReporter(sys.stdout)
    sources: dict[str, Any] = {}
    photos = service.photo_refresher(config, reporter)  # its photo app token outlives cycles

    def cached_source(org: Any) -> Any:
        if org.slug not in sources:
            sources[org.slug] = service.graph_source(org)
        return sources[org.slug]

    def cycle() -> None:
        try:
            with service.syncer(
                config, reporter, cached_source, close_sources=False, photos=photos
            ) as sync:
                for outcome in sync.cycle(orgs=orgs):
                    reporter.event(outcome.org, outcome_summary(outcome))
        except LockedError as exc:
            reporter.event("daemon", f"skipped this cycle: {exc.message}")
        except CardsyncError as exc:
            reporter.event("daemon", f"cycle failed: {exc.message}")

    scheduler = BlockingScheduler()
    scheduler.add_job(
        cycle,
        IntervalTrigger(minutes=interval),
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.datetime.now(),
    )

    def stop(signum: int, frame: Any) -> None:
        reporter.event("daemon", "stopping")
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    reporter.event("daemon", f"syncing every {interval} minutes; Ctrl-C or SIGTERM stops")
    try:
        scheduler.start()
    except KeyboardInterrupt:
        pass
    finally:
        for source in sources.values():
            source.close()
        photos.close()
