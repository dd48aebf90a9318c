"""GraphSource: the synchronous face of the Graph client.

msgraph-sdk is async-only and its httpx client is bound to the event loop it first ran
on, so a GraphSource owns one event loop for its whole life (the daemon keeps it across
cycles, and with it the credential's token cache). Sync methods run that loop on the
calling thread until their coroutine is done (:class:`_CallerLoop`).

:meth:`GraphSource.delta` streams: while the caller works on page N, the request for
page N+1 is out, and no more than that, so a tenant is never held whole.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from ..config import EntraConfig
from ..errors import DeltaExpiredError, GraphError
from ..models import DELTA_SELECT, DeltaPage, DirectoryUser, GraphUser, Removal
from .client import GraphClient, Stats
from .errors import same_origin, status_of
from .parse import PageReader, parse_user
from .scope import Assignment, MembershipRound, ScopeReader

T = TypeVar("T")
_SELECT = ",".join(DELTA_SELECT)
log = logging.getLogger("cardsync.graph")

# Parsed pages a round may hold ahead of its caller (each ~200 users, ~0.2 MB). The
# loop runs while the caller waits for a page or calls the source for something else.
PREFETCH_PAGES = 16
# Entries parsed between two turns of the event loop, so that the request for the next
# page goes out (and its answer comes in) while a page is being parsed.
PARSE_SLICE = 25
# Turns of the event loop a request through the SDK takes to reach the socket on a
# kept-alive connection (3, measured), plus one.
SEND_TURNS = 4
_NEXT_LINK = b'"@odata.nextLink":"'


class _LoopThread:
    """An asyncio event loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="cardsync-graph", daemon=True
        )
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = self.submit(coro)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt in the caller: stop the request too
            raise

    @classmethod
    def with_client(
        cls, entra: EntraConfig, *, retry_budget: float, stats: Stats
    ) -> tuple[_LoopThread, GraphClient]:
        """A new loop thread and a GraphClient built on it: the SDK's httpx client
        then belongs to this loop, which keeps it (and the token cache) for life."""
        thread = cls()
        return thread, _client_on(thread, thread.stop, entra, retry_budget, stats)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def close_client(self, client: GraphClient) -> None:
        """Cancel what still runs on the loop (e.g. a prefetch of a round the caller
        abandoned), close ``client``'s connections, then stop the loop."""

        async def shutdown() -> None:
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await client.aclose()

        try:
            self.run(shutdown())
        finally:
            self.stop()


class _CallerLoop:
    """An asyncio event loop run by the thread that calls into the source, one call
    at a time (:class:`_LoopThread` runs its loop on a thread of its own).

    A users/delta round then runs on the caller's thread alone: while the caller
    stores a page, the loop is not running; the request for the next page is already
    out, Graph works on it and its answer waits in the socket. With the loop on a
    thread of its own, that thread woke for every TLS record of the answer and waited
    for the GIL while the caller stored: a 100,000-user ingest took ~15% longer
    (docs/performance.md).

    :meth:`close` may come from another thread while a call runs (the daemon stopping
    mid-cycle): the call then raises GraphError, and so does any later one."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # Held while the loop runs. Reentrant: a round abandoned inside a run (its
        # generator finalized by the garbage collector there) cancels its task here.
        self._lock = threading.RLock()
        self._closing = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            task = self._task(coro)
            try:
                return self.loop.run_until_complete(task)
            except asyncio.CancelledError:
                if self._closing:
                    raise _closed_error() from None
                raise
            except BaseException:
                # e.g. KeyboardInterrupt while the loop ran: stop the request too
                self._finish(task)
                raise

    def start(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A task that runs whenever the loop does (during later :meth:`run` calls)."""
        with self._lock:
            return self._task(coro)

    def _task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        if self._closing or self.loop.is_closed():
            coro.close()
            raise _closed_error()
        return self.loop.create_task(coro)

    def cancel(self, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` and let it clean up; nothing to do once the loop is closed."""
        with self._lock:
            if self.loop.is_running():  # called from inside a run: it cleans up later
                task.cancel()
            elif not self.loop.is_closed():
                self._finish(task)

    def _finish(self, task: asyncio.Future[Any]) -> None:
        if task.done():
            return
        task.cancel()
        with contextlib.suppress(BaseException):
            self.loop.run_until_complete(asyncio.wait({task}))

    @classmethod
    def with_client(
        cls, entra: EntraConfig, *, retry_budget: float, stats: Stats
    ) -> tuple[_CallerLoop, GraphClient]:
        """A new loop and a GraphClient built on it (as :meth:`_LoopThread.with_client`)."""
        runner = cls()
        return runner, _client_on(runner, runner.loop.close, entra, retry_budget, stats)

    def close_client(self, client: GraphClient) -> None:
        """Cancel what still runs on the loop (a call on another thread, a round the
        caller abandoned), close ``client``'s connections, then close the loop."""

        async def shutdown() -> None:
            await _cancel_tasks_and_wait()
            await client.aclose()

        self._closing = True
        # A call running on another thread (or about to: it may have passed its check of
        # _closing) is woken until it lets go of the loop.
        while not self._lock.acquire(timeout=0.05):
            if self.loop.is_running():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    self.loop.call_soon_threadsafe(_cancel_tasks)
        try:
            if self.loop.is_closed():
                return
            try:
                task = self.loop.create_task(shutdown(), name=_SHUTDOWN)
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    self.loop.run_until_complete(task)
            finally:
                self.loop.close()
        finally:
            self._lock.release()


_SHUTDOWN = "cardsync-shutdown"


def _client_on(
    runner: _LoopThread | _CallerLoop,
    discard: Callable[[], None],
    entra: EntraConfig,
    retry_budget: float,
    stats: Stats,
) -> GraphClient:
    """A GraphClient built on ``runner``'s loop; ``discard`` the runner if that fails."""

    async def build() -> GraphClient:
        return GraphClient(entra, retry_budget=retry_budget, stats=stats)

    try:
        return runner.run(build())
    except BaseException:
        discard()
        raise


def _cancel_tasks() -> None:
    """Cancel the loop's tasks but a shutdown (this may run late, in the shutdown's
    own run of the loop)."""
    for task in asyncio.all_tasks():
        if task.get_name() != _SHUTDOWN:
            task.cancel()


async def _cancel_tasks_and_wait() -> None:
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def _closed_error() -> GraphError:
    return GraphError("the connection to Microsoft Graph was closed during a sync")


class GraphSource:
    """Users from Microsoft Graph for one Entra app registration.

    ``retry_budget``: seconds of unbroken throttling (or of a lost connection) one
    request may wait out before :class:`~cardsync.errors.ThrottledError`.
    """

    def __init__(self, entra: EntraConfig, *, retry_budget: float = 600.0) -> None:
        self.entra = entra
        self.stats = Stats()
        self._closed = False
        self._scope_reader: ScopeReader | None = None
        self._loop, self._client = _CallerLoop.with_client(
            entra, retry_budget=retry_budget, stats=self.stats
        )

    @property
    def requests_made(self) -> int:
        """HTTP requests sent to Graph so far, retries included, token requests not."""
        return self.stats.requests

    # -- users/delta -------------------------------------------------------------------

    def first_delta_url(self) -> str:
        return f"{self.entra.graph_url}/users/delta?$select={_SELECT}"

    def delta(self, link: str | None) -> Iterator[DeltaPage]:
        """One round of users/delta, page by page; the last page carries ``delta_link``.

        ``link`` None starts a full round; otherwise it is the stored deltaLink. A link
        Graph no longer accepts (410, or any 400 such as ``syncStateNotFound``), or one
        for another Graph endpoint, raises :class:`~cardsync.errors.DeltaExpiredError`
        before any page is yielded; the caller then starts again with None. (Graph can
        also drop a round's state midway; that raises DeltaExpiredError after some
        pages, and starting again with None is right then too.)

        Query options go on the first request only: Graph carries them in its links.
        """
        self._check_open()
        return self._pages(link)

    def _pages(self, link: str | None) -> Iterator[DeltaPage]:
        # A generator: even a link refused without asking Graph raises on the first
        # next(), like one Graph refuses, so callers handle both in one place.
        if link is not None and not _is_delta_link(link, self.entra.graph_url):
            raise DeltaExpiredError(
                f"the stored deltaLink is not a users/delta link of {self.entra.graph_url}"
            )
        url = self.first_delta_url() if link is None else link
        feed = _Feed(PREFETCH_PAGES)
        producer = self._loop.start(self._produce(url, link is not None, feed))
        try:
            while True:
                item = self._loop.run(feed.get())
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._loop.cancel(producer)  # the caller stopped early: stop fetching too

    async def _produce(self, url: str, stored: bool, feed: _Feed) -> None:
        """Fetch and parse a whole round into ``feed``, then None (or the exception).

        Only one request is ever in flight, as in a plain loop, but the next one goes
        out before this page is parsed: its link is read from the raw bytes first
        (:func:`_next_link_hint`), and checked against the parsed page. So Graph works
        on page N+1 while page N is parsed and stored (the loop runs only while the
        caller waits for a page: see :class:`_CallerLoop`).
        """
        ahead: asyncio.Future[bytes] | None = None
        try:
            body = await self._fetch_body(url, stored=stored)
            while True:
                hint = _next_link_hint(body)
                if hint is not None and _is_delta_link(hint, self.entra.graph_url):
                    ahead = asyncio.ensure_future(self._fetch_body(hint))
                    for _ in range(SEND_TURNS):  # let it reach the socket first
                        await asyncio.sleep(0)
                else:
                    hint = None
                page = await self._parse(body)
                if page.next_link != hint:
                    # Never seen from Graph (its links are plain JSON strings); the
                    # parsed page decides.
                    await _discard(ahead)
                    ahead = None
                    if page.next_link is not None:
                        ahead = asyncio.ensure_future(self._fetch_body(page.next_link))
                await feed.put(page)
                if ahead is None:
                    break
                body, ahead = await ahead, None
            feed.close(None)
        except asyncio.CancelledError:
            # The caller stopped reading, or the source is being closed under a caller
            # that still waits (the daemon stopping mid-cycle): wake it either way.
            feed.close(_closed_error())
            await _discard(ahead)
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            await _discard(ahead)
            feed.close(exc)

    async def _fetch_body(self, url: str, *, stored: bool = False) -> bytes:
        if not _is_delta_link(url, self.entra.graph_url):
            # Following it would send our bearer token to another host.
            raise GraphError(
                f"Microsoft Graph sent a users/delta link to another endpoint ({url:.80})"
            )
        try:
            body = await self._client.get(
                lambda: self._client.sdk.users.delta.with_url(url).to_get_request_information(),
                "GET users/delta",
            )
        except GraphError as exc:
            cause = exc.__cause__
            if stored and cause is not None and status_of(cause) == 400:
                # Besides syncStateNotFound/resyncRequired: a stored link Graph cannot
                # read (garbled, another tenant's). A full round heals it, and surfaces
                # any other 400 on its own first request.
                if isinstance(exc, DeltaExpiredError):
                    raise
                raise DeltaExpiredError(
                    f"Microsoft Graph rejected the stored deltaLink: {exc.message}"
                ) from cause
            raise
        if not body:
            raise GraphError("Microsoft Graph sent an empty users/delta page")
        return body

    async def _parse(self, body: bytes) -> DeltaPage:
        """Read a page for the mirror (GraphUser entries: no Person is built), in
        slices, letting the loop send and receive between them."""
        reader = PageReader(body)
        entries: list[DirectoryUser | GraphUser | Removal] = []
        for entry in reader.entries():
            entries.append(entry)
            if len(entries) % PARSE_SLICE == 0:
                await asyncio.sleep(0)
        self.stats.skipped_entries += reader.skipped
        return DeltaPage(tuple(entries), next_link=reader.next_link, delta_link=reader.delta_link)

    # -- single objects ----------------------------------------------------------------

    def get_user(self, key: str) -> DirectoryUser | None:
        """One user by object id or userPrincipalName; None when Graph has no such user."""
        self._check_open()
        if not key or not isinstance(key, str):
            raise ValueError("get_user needs an object id or a userPrincipalName")
        url = f"{self.entra.graph_url}/users/{quote(key, safe='')}?$select={_SELECT}"
        body = self._loop.run(self._get(url, "GET users/{id}"))
        if body is None:
            return None
        try:
            obj = json.loads(body)
        except ValueError as exc:
            raise GraphError("Microsoft Graph sent a user that is not valid JSON") from exc
        return parse_user(obj)

    def deleted_item_exists(self, user_id: str) -> bool:
        """Is the user in the recycle bin (soft-deleted, still restorable)?"""
        self._check_open()
        if not user_id or not isinstance(user_id, str):
            raise ValueError("deleted_item_exists needs an object id")
        url = f"{self.entra.graph_url}/directory/deletedItems/{quote(user_id, safe='')}?$select=id"
        return self._loop.run(self._get(url, "GET directory/deletedItems/{id}")) is not None

    async def _get(self, url: str, what: str) -> bytes | None:
        """GET one object through the SDK's request adapter; None on 404."""
        return await self._client.get(lambda: _get_request(url), what, missing_ok=True)

    # -- sync scope (cardsync.scope) ----------------------------------------------------

    def service_principal_id(self, app_id: str) -> str | None:
        """The object id of the enterprise application (service principal) of the app
        registration ``app_id`` (a client id); None when the tenant has none."""
        self._check_open()
        return self._loop.run(self._scope().service_principal_id(app_id))

    def app_assignments(self, sp_id: str) -> list[Assignment] | None:
        """Users, groups and service principals assigned to the enterprise application
        ``sp_id``, all pages; None when Graph has no such service principal."""
        self._check_open()
        return self._loop.run(self._scope().app_assignments(sp_id))

    def group_members_delta(self, group_ids: Sequence[str], link: str | None) -> MembershipRound:
        """A whole groups/delta round with ``members@delta``: from the stored deltaLink
        ``link``, or a full round for ``group_ids`` (at most 50) when it is None. A link
        Graph no longer accepts raises :class:`~cardsync.errors.DeltaExpiredError`."""
        self._check_open()
        return self._loop.run(self._scope().group_members_delta(tuple(group_ids), link))

    def _scope(self) -> ScopeReader:
        if self._scope_reader is None:
            self._scope_reader = ScopeReader(self._client, self.entra)
        return self._scope_reader

    # -- lifecycle ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this GraphSource is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.close_client(self._client)

    def __enter__(self) -> GraphSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_delta_link(url: str, graph_url: str) -> bool:
    """Is ``url`` a users/delta URL under ``graph_url`` (same origin and version)?"""
    prefix = urlsplit(graph_url).path.rstrip("/").lower() + "/users/delta"
    return same_origin(url, graph_url) and urlsplit(url).path.lower().startswith(prefix)


def _get_request(url: str) -> Any:
    """A GET for an absolute URL, as the SDK's request builders make them."""
    from kiota_abstractions.method import Method
    from kiota_abstractions.request_information import RequestInformation

    request = RequestInformation(Method.GET)
    request.url = url
    request.headers.try_add("Accept", "application/json")
    return request


class _Feed:
    """Pages from the round's producer task to the caller: at most ``size`` waiting
    (the producer awaits room). ``close`` ends the feed with None (the round is
    complete) or an exception to raise in the caller."""

    def __init__(self, size: int) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._room = asyncio.Semaphore(size)
        self._ready = asyncio.Event()

    async def put(self, page: DeltaPage) -> None:
        await self._room.acquire()
        self._items.append(page)
        self._ready.set()

    def close(self, last: BaseException | None) -> None:
        self._items.append(last)
        self._ready.set()

    async def get(self) -> Any:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, DeltaPage):
            self._room.release()
        return item


async def _discard(task: asyncio.Future[Any] | None) -> None:
    """Cancel a request nobody needs any more, and wait until it is gone."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})  # raises nothing but our own cancellation
    if not task.cancelled():
        task.exception()  # finished before the cancel: its failure is not wanted


def _next_link_hint(body: bytes) -> str | None:
    """The page's @odata.nextLink read straight from the raw bytes, before parsing;
    None when it is not there in the compact form Graph sends. Only a hint: the parsed
    page is checked against it. (A quote inside a JSON string is always escaped, so
    these bytes can only be a key.)"""
    at = body.rfind(_NEXT_LINK)
    if at < 0:
        return None
    start = at + len(_NEXT_LINK)
    end = body.find(b'"', start)
    if end < 0:
        return None
    raw = body[start:end]
    if b"\\" in raw:
        return None  # escaped characters: let the parser decode it
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return None
