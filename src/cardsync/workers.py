"""Publishing on every core: worker processes, each with its own backend instance.

Rendering a card (page, vCard, QR code) is pure CPU work, and an initial sync renders
every card of the tenant, so big batches are published by worker processes while the
main process plans, keeps the ledger and removes cards. Only backends that declare
``parallel_safe = True`` are used this way (see :class:`cardsync.backends.Backend`);
each worker builds its own instance with :func:`cardsync.backends.create` from the
same options, publishes a batch of cards, flushes, and answers with what each publish
returned or the error it raised.

Workers are spawned (fresh interpreters, not forks), so they hold only what
publishing needs (~50 MB each) and no copy of the main process's memory or of the
photo client's event-loop thread.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from .errors import BackendError, redact
from .models import Card, OrgProfile, Published

log = logging.getLogger("cardsync.workers")

# A plan needs at least this many publishes before workers are worth their start-up
# (~0.3 s each, in parallel with the main process), unless CARDSYNC_WORKERS is set.
MIN_PUBLISHES = 400


@dataclass(frozen=True)
class BackendSpec:
    """How to build another instance of the configured backend."""

    name: str
    options: dict[str, Any]
    orgs: Sequence[OrgProfile]


# What a worker answers per card: the Published, or the error's message.
Outcome = Published | str


def worker_count(publishes: int) -> int:
    """Workers for a plan with ``publishes`` cards to publish; 0: publish in the main
    process. ``CARDSYNC_WORKERS=N`` sets N for every plan (0 or 1: none); otherwise
    one worker per core this process may use, for plans of :data:`MIN_PUBLISHES`."""
    wanted = os.environ.get("CARDSYNC_WORKERS", "").strip()
    if wanted:
        try:
            count = int(wanted)
        except ValueError:
            log.warning("CARDSYNC_WORKERS=%r is not a number: publishing in one process", wanted)
            return 0
        return count if count > 1 and publishes else 0
    if publishes < MIN_PUBLISHES:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return cores if cores > 1 else 0


class PublishPool:
    """Worker processes publishing batches of cards; :meth:`submit` answers a future."""

    def __init__(self, spec: BackendSpec, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(spec, os.getpid()),
        )

    @classmethod
    def start(cls, spec: BackendSpec, workers: int) -> PublishPool | None:
        """A pool whose first worker is up and has built its backend, or None (with a
        warning) when workers cannot start, e.g. when the program that embeds
        cardsync re-runs itself on import (spawned workers import ``__main__``)."""
        pool = cls(spec, workers)
        try:
            pool._pool.submit(_ready).result()
        except Exception as exc:  # BrokenProcessPool, or the backend failing to build
            pool.close()
            log.warning("publishing in one process: worker processes failed to start (%s)",
                        redact(f"{type(exc).__name__}: {exc}"))
            return None
        return pool

    def submit(self, cards: Sequence[Card]) -> Future[list[Outcome]]:
        return self._pool.submit(_publish, list(cards))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- in the worker process ------------------------------------------------------------

_backend: Any = None


def _start(spec: BackendSpec, parent: int) -> None:
    global _backend
    _die_with(parent)
    from . import backends

    _backend = backends.create(spec.name, spec.options, spec.orgs)


def _die_with(parent: int) -> None:
    """End this worker when the main process ends, even by SIGKILL: a worker left
    running could still be writing a card when the next run publishes it."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the line above
        os._exit(1)


def _ready() -> bool:
    return _backend is not None


def _publish(cards: list[Card]) -> list[Outcome]:
    from . import backends

    out: list[Outcome] = []
    for card in cards:
        try:
            out.append(_backend.publish(card))
        except (BackendError, OSError) as exc:
            out.append(redact(str(exc)) or type(exc).__name__)
    try:
        backends.flush(_backend)
    except (BackendError, OSError) as exc:
        message = f"could not make the batch durable: {redact(str(exc))}"
        return [message if isinstance(o, Published) else o for o in out]
    return out
