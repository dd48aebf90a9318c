"""Failure injection for Graph requests: throttling, outages, odd paging and expired links.

Settings are plain attributes that tests flip while the server runs; the lock guards the
parts that change per request (the throttling RNG and the ``fail_next`` queue), so a seeded
run fails the same requests every time when the client sends them one by one.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

EXPIRY_MODES = ("410", "syncStateNotFound", "resyncRequired")
DELTA_LINK_TTL = 7 * 24 * 3600.0  # Graph keeps directory delta links for 7 days
TOKEN_TTL = 3599  # what Entra's client credentials grant usually answers

# Graph's error codes for the statuses we inject.
FAILURE_CODES = {
    429: ("TooManyRequests", "Too many requests. Please retry again later."),
    500: ("generalException", "An internal server error occurred."),
    502: ("badGateway", "Bad gateway."),
    503: ("serviceNotAvailable", "The service is temporarily unavailable. Retry later."),
    504: ("gatewayTimeout", "The gateway timed out."),
}


@dataclass(frozen=True)
class Failure:
    """An injected error answer: ``status`` with an integer ``Retry-After``."""

    status: int
    retry_after: int

    @property
    def code(self) -> str:
        return FAILURE_CODES[self.status][0]

    @property
    def message(self) -> str:
        return FAILURE_CODES[self.status][1]


@dataclass(frozen=True)
class _FailRule:
    failure: Failure
    path_contains: str


def _checked_status(status: int) -> int:
    if status not in FAILURE_CODES:
        raise ValueError(f"status must be one of {sorted(FAILURE_CODES)}, not {status}")
    return status


class Faults:
    """What to break. See docs/emulator.md; :meth:`clear` restores the defaults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Bumped by expire_delta_links; delta links remember the epoch they were issued in.
        # clear() keeps it, so clearing faults never revives a link that was expired.
        self._epoch = 0
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self.duplicate_entries = False
            self.empty_pages = 0
            self.page_delay = 0.0
            self.delta_link_ttl = DELTA_LINK_TTL
            self.token_ttl = TOKEN_TTL
            self.expiry_mode = "syncStateNotFound"
            self._throttle: tuple[float, Failure, random.Random] | None = None
            self._fail_queue: list[_FailRule] = []

    def throttle(
        self, probability: float, status: int = 429, retry_after: int = 1, seed: int | None = None
    ) -> None:
        """Fail each Graph request (and each ``$batch`` item) with this probability."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        failure = Failure(_checked_status(status), int(retry_after))
        with self._lock:
            self._throttle = (probability, failure, random.Random(seed)) if probability else None

    def fail_next(
        self, n: int = 1, status: int = 503, retry_after: int = 0, path_contains: str = ""
    ) -> None:
        """Fail the next ``n`` Graph requests whose path contains ``path_contains``."""
        rule = _FailRule(Failure(_checked_status(status), int(retry_after)), path_contains)
        with self._lock:
            self._fail_queue.extend([rule] * n)

    def expire_delta_links(self, mode: str = "410") -> None:
        """Invalidate every delta link issued so far; using one answers as ``mode`` says."""
        if mode not in EXPIRY_MODES:
            raise ValueError(f"mode must be one of {EXPIRY_MODES}, not {mode!r}")
        with self._lock:
            self.expiry_mode = mode
            self._epoch += 1

    @property
    def link_epoch(self) -> int:
        return self._epoch

    def failure_for(self, path: str) -> Failure | None:
        """The injected failure for a Graph request to ``path``, if any (consumes it)."""
        with self._lock:
            for i, rule in enumerate(self._fail_queue):
                if rule.path_contains in path:
                    del self._fail_queue[i]
                    return rule.failure
            if self._throttle is not None:
                probability, failure, rng = self._throttle
                if rng.random() < probability:
                    return failure
        return None
