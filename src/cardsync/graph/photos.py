"""Profile photos through JSON batching: which photos changed, and their bytes.

For each user to check, one ``GET /users/{id}/photo`` (its ``@odata.mediaEtag``) and,
only when that etag is not one the caller already knows, one
``GET /users/{id}/photo/$value``. Requests go 20 to a ``POST /$batch``, built here as
plain JSON with relative URLs (msgraph-core's batch helpers are broken), and sent
through the SDK's request adapter like every other request, so auth, redirects and
the time-bounded retry of :class:`~cardsync.graph.client.GraphClient` apply to the
batch itself.

Inside a batch each item answers on its own:

- 429/502/503/504: the item alone is sent again after its ``Retry-After`` (else a
  capped backoff), until :data:`ITEM_RETRY_BUDGET` seconds of unbroken failure;
- 404: the user has no photo;
- 403: the app may not read photos: :class:`PhotoAccessDenied` stops the whole check;
- anything else: that user's check failed this time (:attr:`PhotoResult.error`).

Graph's photo limits (4 concurrent requests and 10,000 requests per 10 minutes, per
app and mailbox) are kept app-wide, which is stricter: at most :data:`MAX_CONCURRENT`
batches are in flight, and a sliding window (:class:`RateGuard`) counts every item,
retries included.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import concurrent.futures
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import quote

from ..config import EntraConfig
from ..errors import ConsentError, GraphError
from .client import GraphClient, Stats
from .errors import RETRY_STATUSES, parse_retry_after

log = logging.getLogger("cardsync.photos")

MAX_BATCH = 20  # Graph's limit of requests in one $batch
MAX_CONCURRENT = 4  # Graph's photo limit: concurrent requests
RATE_LIMIT = 10_000  # Graph's photo limit: requests ...
RATE_WINDOW = 600.0  # ... per 10 minutes, per app and *mailbox*
# Graph counts that limit per mailbox, and a cycle sends a mailbox at most two requests
# (metadata, then bytes) plus retries of throttled items (at most one a second for
# ITEM_RETRY_BUDGET): far below 10,000 in 10 minutes even at the shortest interval. So
# no app-wide window is applied by default; it exists to measure or to be stricter.
APP_WIDE_GUARD = False
ITEM_RETRY_BUDGET = 300.0  # seconds one throttled item may keep being retried
CHUNK = 200  # users checked per step; the next step is fetched while one is stored
BACKOFF_START, BACKOFF_CAP = 1.0, 60.0

PERMISSION_HINT = (
    "grant the Microsoft Graph application permission ProfilePhoto.Read.All or "
    "User.Read.All with admin consent"
)


class PhotoAccessDenied(ConsentError):
    """Graph answered 403 to a photo request: the app lacks the permission."""


class Outcome(Enum):
    KNOWN = "known"  # the mediaEtag is one the caller knows: nothing downloaded
    ABSENT = "absent"  # no photo (404)
    FETCHED = "fetched"  # a new etag, with the bytes
    UNREADABLE = "unreadable"  # a new etag, but the body was not base64
    FAILED = "failed"  # the check failed this time (error says why)


@dataclass(frozen=True)
class PhotoCheck:
    """A user to check, and the etags whose bytes are not wanted (already stored, or
    known to be unreadable)."""

    user_id: str
    known: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PhotoResult:
    user_id: str
    outcome: Outcome
    etag: str | None = None
    data: bytes | None = field(default=None, repr=False)
    error: str | None = None


@dataclass
class PhotoStats:
    """Counters of the photo requests, updated on the loop thread."""

    batches: int = 0  # POST /$batch requests that got an answer
    items: collections.Counter[str] = field(default_factory=collections.Counter)  # by kind
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    retried: int = 0  # items sent again after a 429/5xx
    guard_wait: float = 0.0  # seconds spent waiting for the rate guard

    @property
    def requests(self) -> int:
        """Graph requests made, counted as Graph counts them: one per batch item."""
        return sum(self.items.values())


@dataclass(frozen=True)
class _Item:
    status: int
    headers: dict[str, str]
    body: Any


class RateGuard:
    """At most ``limit`` requests in any ``window`` seconds; ``acquire`` waits."""

    def __init__(
        self,
        limit: int | None = None,
        window: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        # The module constants are read here, not bound as defaults, so that a
        # benchmark can measure the cost of the guard (benchmarks/photos_bench.py).
        self.limit = RATE_LIMIT if limit is None else limit
        self.window = RATE_WINDOW if window is None else window
        self._clock, self._sleep = clock, sleep
        self._sent: collections.deque[tuple[float, int]] = collections.deque()
        self._total = 0

    async def acquire(self, n: int) -> float:
        """Reserve ``n`` requests; returns the seconds waited."""
        if n > self.limit:
            raise ValueError(f"cannot send {n} requests at once under a limit of {self.limit}")
        waited = 0.0
        while True:
            now = self._clock()
            while self._sent and self._sent[0][0] <= now - self.window:
                self._total -= self._sent.popleft()[1]
            if self._total + n <= self.limit:
                self._sent.append((now, n))
                self._total += n
                return waited
            delay = self._sent[0][0] + self.window - now
            log.info(
                "photo requests: waiting %.0f s to stay under %d per %.0f s",
                delay,
                self.limit,
                self.window,
            )
            await self._sleep(delay)
            waited += delay


class PhotoBatcher:
    """The async half: checks users' photos through ``$batch`` (runs on the client's loop)."""

    def __init__(
        self,
        client: GraphClient,
        *,
        guard: RateGuard | None = None,
        max_concurrent: int = MAX_CONCURRENT,
        item_retry_budget: float = ITEM_RETRY_BUDGET,
    ) -> None:
        self.client = client
        self.guard = guard or (RateGuard() if APP_WIDE_GUARD else None)
        self.item_retry_budget = item_retry_budget
        self.stats = PhotoStats()
        self._max_concurrent = max_concurrent
        self._slots: asyncio.Semaphore | None = None  # created on the loop that uses it

    async def check(self, checks: Sequence[PhotoCheck]) -> list[PhotoResult]:
        """One result per check, in order. Raises PhotoAccessDenied on a 403, and the
        client's CardsyncError when a whole batch cannot be sent."""
        groups = [checks[i : i + MAX_BATCH] for i in range(0, len(checks), MAX_BATCH)]
        tasks = [asyncio.ensure_future(self._group(group)) for group in groups]
        try:
            done = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [result for group in done for result in group]

    async def _group(self, checks: Sequence[PhotoCheck]) -> list[PhotoResult]:
        """Metadata for up to 20 users, then the bytes of the photos that changed."""
        meta = await self._send({c.user_id: _photo_url(c.user_id) for c in checks}, "photo")
        results: dict[str, PhotoResult] = {}
        wanted: dict[str, str | None] = {}
        for check in checks:
            item = meta[check.user_id]
            if item.status == 200:
                etag = _media_etag(item.body)
                if etag is not None and etag in check.known:
                    results[check.user_id] = PhotoResult(check.user_id, Outcome.KNOWN, etag)
                else:
                    wanted[check.user_id] = etag
            else:
                results[check.user_id] = self._not_ok(check.user_id, item)
        if wanted:
            values = await self._send(
                {uid: _photo_url(uid) + "/$value" for uid in wanted}, "photo/$value"
            )
            for uid, etag in wanted.items():
                item = values[uid]
                results[uid] = (
                    _fetched(uid, etag, item.body)
                    if item.status == 200
                    else self._not_ok(uid, item)
                )
        return [results[c.user_id] for c in checks]

    def _not_ok(self, user_id: str, item: _Item) -> PhotoResult:
        if item.status == 404:
            return PhotoResult(user_id, Outcome.ABSENT)
        if item.status == 403:
            raise PhotoAccessDenied(
                f"app {self.client.entra.client_id} may not read profile photos in tenant "
                f"{self.client.entra.tenant_id}: Microsoft Graph answered 403 Forbidden"
                f"{_detail(item)}",
                PERMISSION_HINT,
            )
        if item.status in RETRY_STATUSES:
            return PhotoResult(
                user_id,
                Outcome.FAILED,
                error=f"Microsoft Graph kept answering {item.status} (throttled or unavailable)",
            )
        what = f"answered {item.status}" if item.status else "sent no answer"
        return PhotoResult(user_id, Outcome.FAILED, error=f"Microsoft Graph {what}{_detail(item)}")

    async def _send(self, urls: dict[str, str], kind: str) -> dict[str, _Item]:
        """Send GETs of ``urls`` (key -> relative URL) in one batch; throttled items
        again after their Retry-After. Returns key -> final item answer."""
        answers: dict[str, _Item] = {}
        pending = dict(urls)
        first_failure: dict[str, float] = {}
        attempt = 0
        while pending:
            got = await self._post(pending, kind)
            retry: dict[str, str] = {}
            delay = 0.0
            now = time.monotonic()
            for key, item in got.items():
                if item.status in RETRY_STATUSES:
                    wait = _item_retry_after(item)
                    if wait is None or wait <= 0:
                        wait = min(BACKOFF_CAP, BACKOFF_START * 2.0**attempt)
                        wait *= 0.5 + random.random() / 2
                    started = first_failure.setdefault(key, now)
                    if now - started + wait <= self.item_retry_budget:
                        retry[key] = pending[key]
                        delay = max(delay, wait)
                        continue
                answers[key] = item
            if retry:
                self.stats.retried += len(retry)
                await asyncio.sleep(delay)
                attempt += 1
            pending = retry
        return answers

    async def _post(self, urls: dict[str, str], kind: str) -> dict[str, _Item]:
        keys = list(urls)
        payload = json.dumps(
            {
                "requests": [
                    {"id": str(i + 1), "method": "GET", "url": urls[key]}
                    for i, key in enumerate(keys)
                ]
            }
        ).encode()
        if self.guard is not None:
            self.stats.guard_wait += await self.guard.acquire(len(keys))
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_concurrent)
        url = f"{self.client.entra.graph_url}/$batch"
        async with self._slots:
            self.stats.items[kind] += len(keys)
            body = await self.client.get(lambda: _batch_request(url, payload), "POST $batch")
        self.stats.batches += 1
        by_id = _parse_batch(body)
        answers = {}
        for i, key in enumerate(keys):
            item = by_id.get(str(i + 1), _Item(0, {}, None))
            self.stats.statuses[item.status] += 1
            answers[key] = item
        return answers


class PhotoGraph:
    """The synchronous face: one GraphClient (its own app registration, or the
    organization's) on its own event loop thread, kept across cycles."""

    def __init__(self, entra: EntraConfig, *, retry_budget: float = 600.0) -> None:
        from .source import _LoopThread  # the loop-per-client pattern of GraphSource

        self.entra = entra
        self.http_stats = Stats()
        self._closed = False
        self._loop, self._client = _LoopThread.with_client(
            entra, retry_budget=retry_budget, stats=self.http_stats
        )
        self.batcher = PhotoBatcher(self._client)

    @property
    def stats(self) -> PhotoStats:
        return self.batcher.stats

    def check(
        self, checks: Sequence[PhotoCheck], chunk: int = CHUNK
    ) -> Iterator[list[PhotoResult]]:
        """Results chunk by chunk; the next chunk is in flight while the caller works."""
        if self._closed:
            raise RuntimeError("this PhotoGraph is closed")
        parts = [checks[i : i + chunk] for i in range(0, len(checks), chunk)]
        return self._chunks(parts)

    def _chunks(self, parts: list[Sequence[PhotoCheck]]) -> Iterator[list[PhotoResult]]:
        futures: collections.deque[concurrent.futures.Future[list[PhotoResult]]]
        futures = collections.deque()
        try:
            for i, part in enumerate(parts):
                if not futures:
                    futures.append(self._loop.submit(self.batcher.check(part)))
                if i + 1 < len(parts):
                    futures.append(self._loop.submit(self.batcher.check(parts[i + 1])))
                current = futures.popleft()
                try:
                    result = current.result()
                except BaseException:
                    current.cancel()  # e.g. KeyboardInterrupt in the caller: stop it too
                    raise
                yield result
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.close_client(self._client)


def _photo_url(user_id: str) -> str:
    return f"/users/{quote(user_id, safe='')}/photo"


def _media_etag(body: Any) -> str | None:
    etag = body.get("@odata.mediaEtag") if isinstance(body, dict) else None
    return etag if isinstance(etag, str) and etag else None


def _fetched(user_id: str, etag: str | None, body: Any) -> PhotoResult:
    """A photo's bytes from its (base64) batch body; without a mediaEtag, the content
    stands in for one, so an unchanged photo still compares equal."""
    try:
        if not isinstance(body, str):
            raise ValueError("not a string")
        data = base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        return PhotoResult(
            user_id,
            Outcome.UNREADABLE,
            etag,
            error="Microsoft Graph sent a photo body that is not base64",
        )
    if etag is None:
        etag = "sha256:" + hashlib.sha256(data).hexdigest()[:32]
    return PhotoResult(user_id, Outcome.FETCHED, etag, data)


def _item_retry_after(item: _Item) -> float | None:
    for key, value in item.headers.items():
        if key.lower() == "retry-after" and isinstance(value, str | int):
            return parse_retry_after(str(value))
    return None


def _detail(item: _Item) -> str:
    error = item.body.get("error") if isinstance(item.body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return f" ({code})" if isinstance(code, str) and code else ""


def _parse_batch(body: bytes | None) -> dict[str, _Item]:
    try:
        doc = json.loads(body or b"")
        responses = doc["responses"]
        if not isinstance(responses, list):
            raise TypeError("responses is not a list")
    except (ValueError, TypeError, KeyError) as exc:
        raise GraphError(
            f"Microsoft Graph sent a $batch answer that cannot be read ({exc})",
            "this is usually a proxy or gateway answering instead of Graph; run again",
        ) from exc
    items = {}
    for response in responses:
        if not isinstance(response, dict):
            continue
        status = response.get("status")
        headers = response.get("headers")
        items[str(response.get("id"))] = _Item(
            status if isinstance(status, int) else 0,
            {str(k): v for k, v in headers.items()} if isinstance(headers, dict) else {},
            response.get("body"),
        )
    return items


def _batch_request(url: str, payload: bytes) -> Any:
    """A POST of the batch JSON, as the SDK's request builders make requests."""
    from kiota_abstractions.method import Method
    from kiota_abstractions.request_information import RequestInformation

    request = RequestInformation(Method.POST)
    request.url = url
    request.headers.try_add("Accept", "application/json")
    request.set_stream_content(payload, "application/json")
    return request


__all__ = [
    "PERMISSION_HINT",
    "Outcome",
    "PhotoAccessDenied",
    "PhotoBatcher",
    "PhotoCheck",
    "PhotoGraph",
    "PhotoResult",
    "PhotoStats",
    "RateGuard",
]
