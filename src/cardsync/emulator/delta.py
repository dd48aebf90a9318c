"""Delta query paging (users/delta, groups/delta): rounds, opaque links and paging faults.

A round's bounds are fixed when it starts: an initial round covers the objects that existed
then (in creation order), an incremental round the objects changed between the deltaLink's
change sequence and the sequence at the start. The ``$skiptoken`` / ``$deltatoken`` values
are base64url JSON of a :class:`Cursor` / :class:`DeltaState`, so any page can be served
again from the token alone, and a restarted client sees the same pages.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol
from urllib.parse import quote

from .faults import Faults
from .wire import GRAPH_JSON, Request, Response, graph_error, json_response

MAX_FILTER_IDS = 50
Entry = dict[str, Any]
Render = Callable[[str], Entry | None]
_ID_EQ = re.compile(r"\s*id\s+eq\s+'([^']+)'\s*", re.IGNORECASE)


class DeltaSource(Protocol):
    """One resource that supports delta: what it holds and how its objects look."""

    resource: str  # "users" or "groups"
    default_select: tuple[str, ...]

    def check_select(self, select: Sequence[str]) -> None:
        """Raise ValueError, with Graph's message, for an unknown property."""

    def bounds(self) -> tuple[int, int]:
        """The latest change seq and the number of objects created, read together."""

    def creation_order(self) -> Sequence[str]:
        """Ids in creation order (append-only)."""

    def current(self, oid: str, select: Sequence[str]) -> Entry | None:
        """The object for an initial round, or None to leave it out (deleted)."""

    def changed(self, since: int, until: int, select: Sequence[str]) -> Sequence[str]:
        """Ids of objects with a change in ``(since, until]`` that ``select`` tracks."""

    def change(
        self, oid: str, select: Sequence[str], since: int, until: int, minimal: bool
    ) -> Entry:
        """The entry for an incremental round: the object or an ``@removed`` stub."""


@dataclass(frozen=True)
class Cursor:
    """A page position within a round (the ``$skiptoken``)."""

    resource: str
    tenant: str
    select: tuple[str, ...]
    ids: tuple[str, ...]  # from $filter=id eq '…'; () means all
    since: int | None  # None: initial round
    until: int  # change seq when the round started
    stop: int  # initial round: how many objects existed when it started
    pos: int = 0
    empty: int = 0  # empty pages still to send (faults.empty_pages)
    last: int | None = None  # position of the previous page's last entry


@dataclass(frozen=True)
class DeltaState:
    """What a deltaLink remembers (the ``$deltatoken``)."""

    resource: str
    tenant: str
    select: tuple[str, ...]
    ids: tuple[str, ...]
    since: int
    issued: float  # time.time() when the link was handed out
    epoch: int  # faults.link_epoch then; expire_delta_links() bumps it


def encode(token: Cursor | DeltaState) -> str:
    raw = json.dumps(asdict(token), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(cls: type[Cursor] | type[DeltaState], token: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fields = json.loads(raw)
        fields["select"], fields["ids"] = tuple(fields["select"]), tuple(fields["ids"])
        return cls(**fields)
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ValueError("Badly formed token.") from exc


def parse_filter(text: str) -> tuple[str, ...]:
    """``id eq 'a' or id eq 'b'`` -> ids; delta accepts nothing else."""
    if not text:
        return ()
    parts = re.split(r"\s+or\s+", text.strip(), flags=re.IGNORECASE)
    matches = [_ID_EQ.fullmatch(p) for p in parts]
    if not all(matches):
        raise ValueError("Unsupported query: delta supports only $filter=id eq '…', OR-ed.")
    if len(parts) > MAX_FILTER_IDS:
        raise ValueError(f"Too many ids in $filter: at most {MAX_FILTER_IDS}.")
    return tuple(m.group(1) for m in matches if m)


class _Expired(Exception):
    def __init__(self, state: DeltaState) -> None:
        self.state = state


class DeltaEndpoint:
    """Answers ``GET /v1.0/{resource}/delta`` for one tenant."""

    def __init__(
        self, source: DeltaSource, tenant_id: str, faults: Faults, page_size: int, graph_url: str
    ) -> None:
        self.source = source
        self.tenant_id = tenant_id
        self.faults = faults
        self.page_size = page_size
        self.link = f"{graph_url}/{source.resource}/delta"
        self.graph_url = graph_url

    def handle(self, request: Request) -> Response:
        if self.faults.page_delay:
            time.sleep(self.faults.page_delay)
        query = request.query
        minimal = "return=minimal" in request.headers.get("prefer", "")
        try:
            if "$skiptoken" in query:
                cursor = self._mine(decode(Cursor, query["$skiptoken"]))
            elif "$deltatoken" in query:
                cursor = self._resume(query)
            else:
                cursor = self._start(self._select(query), parse_filter(query.get("$filter", "")))
        except _Expired as expired:
            return self._expired(request, expired.state)
        except ValueError as exc:
            return graph_error(400, "BadRequest", str(exc), request)
        return self._page(cursor, minimal)

    def _select(self, query: dict[str, str]) -> tuple[str, ...]:
        if "$select" not in query:
            return self.source.default_select
        select = tuple(dict.fromkeys(p.strip() for p in query["$select"].split(",") if p.strip()))
        self.source.check_select(select)
        return select

    def _mine(self, token: Any) -> Any:
        if token.tenant != self.tenant_id or token.resource != self.source.resource:
            raise ValueError("Badly formed token.")
        return token

    def _start(self, select: tuple[str, ...], ids: tuple[str, ...]) -> Cursor:
        until, stop = self.source.bounds()
        return Cursor(
            resource=self.source.resource,
            tenant=self.tenant_id,
            select=select,
            ids=ids,
            since=None,
            until=until,
            stop=stop,
            empty=self.faults.empty_pages,
        )

    def _resume(self, query: dict[str, str]) -> Cursor:
        """The round a deltaLink starts; ``latest`` is an empty round ending now."""
        if query["$deltatoken"] == "latest":
            select, ids = self._select(query), parse_filter(query.get("$filter", ""))
            now, _ = self.source.bounds()
            return replace(self._start(select, ids), since=now, until=now, stop=0, empty=0)
        state: DeltaState = self._mine(decode(DeltaState, query["$deltatoken"]))
        too_old = time.time() - state.issued > self.faults.delta_link_ttl
        if too_old or state.epoch < self.faults.link_epoch:
            raise _Expired(state)
        return replace(self._start(state.select, state.ids), since=state.since, stop=0)

    def _expired(self, request: Request, state: DeltaState) -> Response:
        mode = self.faults.expiry_mode
        if mode == "410":
            fresh = f"{self.link}?$select={quote(','.join(state.select), safe=',')}"
            if state.ids:
                wanted = " or ".join(f"id eq '{i}'" for i in state.ids)
                fresh += f"&$filter={quote(wanted)}"
            message = "Resync required: start a full synchronization from the Location URL."
            return graph_error(410, "resyncRequired", message, request, (("Location", fresh),))
        message = (
            "The sync state was not found; the delta token is expired or invalid."
            if mode == "syncStateNotFound"
            else "Resync required. Replace any local cached copies with a full synchronization."
        )
        return graph_error(400, mode, message, request)

    def _state(self, select: tuple[str, ...], ids: tuple[str, ...], since: int) -> DeltaState:
        return DeltaState(
            self.source.resource,
            self.tenant_id,
            select,
            ids,
            since,
            time.time(),
            self.faults.link_epoch,
        )

    def _page(self, cursor: Cursor, minimal: bool) -> Response:
        if cursor.empty > 0:
            return self._reply(cursor.select, [], replace(cursor, empty=cursor.empty - 1))
        order, end, render = self._round(cursor, minimal)
        entries: list[dict[str, Any]] = []
        pos, last = cursor.pos, None
        wanted = set(cursor.ids)
        while pos < end and len(entries) < self.page_size:
            oid = order[pos]
            entry = render(oid) if not wanted or oid in wanted else None
            if entry is not None:
                entries.append(entry)
                last = pos
            pos += 1
        if self.faults.duplicate_entries:
            previous = render(order[cursor.last]) if cursor.last is not None else None
            entries = _replayed(entries, previous)
        if pos < end:
            next_cursor = replace(cursor, pos=pos, last=last if last is not None else cursor.last)
            return self._reply(cursor.select, entries, next_cursor, minimal=minimal)
        state = self._state(cursor.select, cursor.ids, cursor.until)
        return self._reply(cursor.select, entries, state=state, minimal=minimal)

    def _round(self, cursor: Cursor, minimal: bool) -> tuple[Sequence[str], int, Render]:
        """The ids a round walks through, where it ends, and how each id becomes an entry."""
        fields = tuple(p for p in cursor.select if p != "id")
        source, since, until = self.source, cursor.since, cursor.until
        if since is None:
            return source.creation_order(), cursor.stop, lambda oid: source.current(oid, fields)
        order = source.changed(since, until, fields)
        return order, len(order), lambda oid: source.change(oid, fields, since, until, minimal)

    def _reply(
        self,
        select: tuple[str, ...],
        entries: list[dict[str, Any]],
        next_cursor: Cursor | None = None,
        state: DeltaState | None = None,
        minimal: bool = False,
    ) -> Response:
        resource = self.source.resource
        body: dict[str, Any] = {
            "@odata.context": f"{self.graph_url}/$metadata#{resource}({','.join(select)})",
            "value": entries,
        }
        if next_cursor is not None:
            body["@odata.nextLink"] = f"{self.link}?$skiptoken={encode(next_cursor)}"
        if state is not None:
            body["@odata.deltaLink"] = f"{self.link}?$deltatoken={encode(state)}"
        headers = (("Preference-Applied", "return=minimal"),) if minimal else ()
        return json_response(200, body, headers, GRAPH_JSON)


def _replayed(entries: list[Entry], previous: Entry | None) -> list[Entry]:
    """Replays as Graph sends them: the previous page's last entry again at the start, and
    one entry twice within the page."""
    if len(entries) >= 2:
        entries = [*entries, entries[0]]
    return [previous, *entries] if previous is not None else entries
