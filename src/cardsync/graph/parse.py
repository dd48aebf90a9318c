"""Pure parsing of Graph JSON into cardsync models: bytes in, frozen dataclasses out.

msgraph's typed models parse a few hundred users a second and cannot tell an absent
property from a null one, so delta pages are read with plain :func:`json.loads`.

Directory text is untrusted and kept verbatim (escaping is the renderer's job), with
one exception: lone UTF-16 surrogates (``"\\ud800"`` in the JSON) are not text at all,
cannot be encoded as UTF-8 and would crash whatever stores the user next, so they
become U+FFFD.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Generator, Iterator
from typing import Any

import msgspec

from ..canonical import content_hash
from ..errors import GraphError
from ..models import CARD_FIELDS, DeltaPage, DirectoryUser, GraphUser, Person, Removal

log = logging.getLogger("cardsync.graph")

# Directory object ids are GUIDs. Anything else is not an id we can key a mirror row,
# a URL or a deletedItems lookup on.
_ID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_REMOVAL_REASONS = frozenset({"changed", "deleted"})
_TEXT_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (key, attr) for key, attr in CARD_FIELDS.items() if key != "businessPhones"
)
# A JSON escape of a UTF-16 surrogate; only pages containing one can yield lone surrogates.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_delta_page(raw: bytes | str) -> DeltaPage:
    """Parse one users/delta response body. Entries keep Graph's order.

    Entries without a valid id are skipped and logged; use
    :func:`parse_delta_page_counted` to get their number.
    """
    return parse_delta_page_counted(raw)[0]


def parse_delta_page_counted(raw: bytes | str) -> tuple[DeltaPage, int]:
    """Like :func:`parse_delta_page`, also returning how many entries were skipped."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _not_json(exc) from exc
    if not isinstance(doc, dict):
        raise GraphError("Microsoft Graph sent a users/delta page that is not a JSON object")
    next_link, delta_link = _links(doc.get("@odata.nextLink"), doc.get("@odata.deltaLink"))
    values = doc.get("value", [])
    if values is None:
        values = []
    if not isinstance(values, list):
        raise GraphError("Microsoft Graph sent a users/delta page whose 'value' is not a list")

    fix = _fix_surrogates if _has_surrogate_escape(raw) else None
    entries: list[DirectoryUser | Removal] = []
    append = entries.append
    skipped = 0
    for obj in values:
        entry = _entry(obj, fix)
        if entry is None:
            skipped += 1
        else:
            append(entry)
    if skipped:
        log.warning("skipped %d users/delta entries without a valid id", skipped)
    return DeltaPage(tuple(entries), next_link=next_link, delta_link=delta_link), skipped


def parse_user(raw_obj: dict[str, Any]) -> DirectoryUser:
    """Parse one user object, e.g. the body of ``GET /users/{id}``."""
    if not isinstance(raw_obj, dict):
        raise GraphError("Microsoft Graph sent a user that is not a JSON object")
    entry = _entry(raw_obj, _fix_surrogates)
    if not isinstance(entry, DirectoryUser):
        raise GraphError("Microsoft Graph sent a user without a valid id")
    return entry


def _entry(obj: Any, fix: Any) -> DirectoryUser | Removal | None:
    found = _id_or_removal(obj)
    if not isinstance(found, str):
        return found
    get = obj.get
    return DirectoryUser(
        found, _person(get, fix), _enabled(get("accountEnabled")), _user_type(get, fix)
    )


def _id_or_removal(obj: Any) -> str | Removal | None:
    """A users/delta entry's id when it is a user, its Removal when it is one, or None
    when it is neither an object nor keyed by a valid id (skipped)."""
    if type(obj) is not dict:
        return None
    uid = obj.get("id")
    if type(uid) is not str or not _ID.fullmatch(uid):
        return None
    removed = obj.get("@removed")
    if removed is not None:
        reason = removed.get("reason") if type(removed) is dict else None
        return Removal(uid, reason if reason in _REMOVAL_REASONS else "changed")
    return uid


def _person(get: Callable[[str], Any], fix: Callable[[str], str] | None) -> Person:
    """The card fields of a user object (``get`` is its dict's ``get``)."""
    fields: dict[str, Any] = {}
    for key, attr in _TEXT_FIELDS:
        value = _column(get(key), fix)
        if value:
            fields[attr] = value
    phones = get("businessPhones")
    if phones:
        fields["business_phones"] = _phones(phones, fix)
    return Person(**fields)


def _user_type(get: Callable[[str], Any], fix: Callable[[str], str] | None) -> str:
    user_type = get("userType")
    if type(user_type) is not str or not user_type:
        return "Member"
    return fix(user_type) if fix is not None else user_type


def _coerce_text(value: Any) -> str:
    """Numbers become their decimal text; booleans, lists and objects are not text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _phones(value: Any, fix: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        text = item if type(item) is str else _coerce_text(item)
        if fix is not None:
            text = fix(text)
        if text:
            out.append(text)
    return tuple(out)


def _enabled(value: Any) -> bool:
    """accountEnabled. We never send ``Prefer: return=minimal``, so with $select it is
    present on every user object; Graph sends null for some old accounts, which sign in."""
    if type(value) is bool:
        return value
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0")
    if isinstance(value, int | float):
        return bool(value)
    return True


def _link(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise GraphError(
            f"Microsoft Graph sent a users/delta link that is not a URL: {value!r:.60}"
        )
    return value


def _has_surrogate_escape(raw: bytes | str) -> bool:
    if isinstance(raw, str):
        return True  # not what Graph sends; take the slow, safe path
    # A one-byte search first: bytes.__contains__ runs memchr for one byte, and a
    # generic search for more (~80 us against ~1 us on a 110 KB page here). Most pages
    # hold no backslash at all.
    return b"\\" in raw and _SURROGATE_ESCAPE.search(raw) is not None


def _fix_surrogates(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", text)


# -- users/delta pages read for storing: GraphUser, no Person ---------------------------

_SCAN = json.JSONDecoder().scan_once
_WS = re.compile(r"[ \t\n\r]*")


class _Page(msgspec.Struct, gc=False):
    """A users/delta page as msgspec splits it: each entry's raw JSON bytes, the links."""

    value: list[msgspec.Raw] | None = None
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")
    delta_link: str | None = msgspec.field(default=None, name="@odata.deltaLink")


class _User(msgspec.Struct, gc=False):
    """The properties of a user object that the mirror keys and filters on, in the
    types Graph sends them; msgspec skips the rest without building anything. (Like
    :func:`json.loads`, the last of two equal keys wins.)"""

    id: str = ""
    userPrincipalName: str | None = None  # noqa: N815 - Graph's names
    mail: str | None = None
    displayName: str | None = None  # noqa: N815
    accountEnabled: bool | None = None  # noqa: N815
    userType: str | None = None  # noqa: N815
    removed: Any = msgspec.field(default=None, name="@removed")


_PAGE = msgspec.json.Decoder(_Page)
_USER = msgspec.json.Decoder(_User)


class PageReader:
    """Reads a users/delta page for the directory mirror, entry by entry.

    Each user becomes a :class:`~cardsync.models.GraphUser` that keeps its object's
    JSON text exactly as Graph sent it: no Person and no re-encoding. msgspec splits
    the page into each user's bytes and decodes only the properties the mirror keys
    on (~3 us a user here, against ~7 us for the json module's scanner building every
    user's dict); a page msgspec refuses or one holding escaped UTF-16 surrogates is
    read with the scanner. Iterate :meth:`entries` to the end, then read
    :attr:`next_link`, :attr:`delta_link` and :attr:`skipped`. The same checks as
    :func:`parse_delta_page` apply, with the same errors, but for one: invalid UTF-8
    is refused in what is kept (users, links), not in properties no one reads (such
    as ``@odata.context``).
    """

    def __init__(self, raw: bytes | str) -> None:
        self._raw = raw
        self._fix = _fix_surrogates if _has_surrogate_escape(raw) else None
        self.next_link: str | None = None
        self.delta_link: str | None = None
        self.skipped = 0

    def entries(self) -> Iterator[GraphUser | Removal]:
        raw = self._raw
        if self._fix is None and isinstance(raw, bytes):
            try:
                page = _PAGE.decode(raw)
            except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
                pass  # not what Graph sends: the scanner below gives the exact error
            else:
                yield from self._split(page)
                return
        yield from self._scanned()

    def _split(self, page: _Page) -> Iterator[GraphUser | Removal]:
        """The entries of a page msgspec has split into each user's raw bytes: only
        the few properties the mirror keys on are decoded (into :class:`_User`). An
        entry whose properties are not the types Graph sends (a number for a mail, an
        ``@removed``, not an object) is read as :func:`_graph_entry` reads it."""
        self.next_link, self.delta_link = _links(page.next_link, page.delta_link)
        decode = _USER.decode
        for item in page.value or ():
            data = bytes(item)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_json(exc) from None
            try:
                user = decode(data)
            except msgspec.MsgspecError:
                user = None
            if user is None or user.removed is not None:
                try:
                    obj = json.loads(text)
                except (ValueError, RecursionError) as exc:  # msgspec took it; json did not
                    raise _not_json(exc) from None
                entry = _graph_entry(obj, text, 0, len(text), None)
            elif _ID.fullmatch(user.id):
                entry = GraphUser(
                    user.id,
                    text,
                    content_hash(data),
                    user.userPrincipalName or "",
                    user.mail or "",
                    user.displayName or "",
                    user.accountEnabled is not False,
                    user.userType or "Member",
                )
            else:
                entry = None
            if entry is None:
                self.skipped += 1
            else:
                yield entry
        if self.skipped:
            log.warning("skipped %d users/delta entries without a valid id", self.skipped)

    def _scanned(self) -> Iterator[GraphUser | Removal]:
        """The entries read with the json module's scanner, object by object: for pages
        that need lone surrogates replaced, or that msgspec refuses."""
        raw = self._raw
        try:
            s = raw if isinstance(raw, str) else raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_json(exc) from exc
        try:
            at = _skip_blank(s, 0)
            if s[at : at + 1] != "{":
                raise GraphError(
                    "Microsoft Graph sent a users/delta page that is not a JSON object"
                )
            at = _skip_blank(s, at + 1)
            links: dict[str, Any] = {}
            if s[at] == "}":
                at += 1
            else:
                while True:
                    if s[at] != '"':
                        _fail(s, at)
                    key, at = _scan(s, at)
                    at = _skip_blank(s, at)
                    if s[at] != ":":
                        _fail(s, at)
                    at = _skip_blank(s, at + 1)
                    if key == "value":
                        if "value" in links:  # entries already handed on: refuse
                            raise GraphError(
                                "Microsoft Graph sent a users/delta page with two 'value' lists"
                            )
                        links["value"] = None
                    if key == "value" and s[at] == "[":
                        at = yield from self._values(s, at)
                    else:
                        value, at = _scan(s, at)
                        if key == "value" and value is not None:
                            raise GraphError(
                                "Microsoft Graph sent a users/delta page whose 'value' "
                                "is not a list"
                            )
                        links[key] = value
                    at = _skip_blank(s, at)
                    if s[at] == "}":
                        at += 1
                        break
                    if s[at] != ",":
                        _fail(s, at)
                    at = _skip_blank(s, at + 1)
            if s[_skip_blank(s, at) :]:
                _fail(s, at)
        except (IndexError, ValueError, RecursionError) as exc:
            raise _not_json(exc) from None
        self.next_link, self.delta_link = _links(
            links.get("@odata.nextLink"), links.get("@odata.deltaLink")
        )
        if self.skipped:
            log.warning("skipped %d users/delta entries without a valid id", self.skipped)

    def _values(self, s: str, at: int) -> Generator[GraphUser | Removal, None, int]:
        """The entries of the ``value`` array starting at ``s[at] == "["``; returns
        the index after its closing bracket."""
        fix = self._fix
        at = _skip_blank(s, at + 1)
        if s[at] == "]":
            return at + 1
        while True:
            obj, end = _scan(s, at)
            entry = _graph_entry(obj, s, at, end, fix)
            if entry is None:
                self.skipped += 1
            else:
                yield entry
            at = _skip_blank(s, end)
            if s[at] == "]":
                return at + 1
            if s[at] != ",":
                _fail(s, at)
            at = _skip_blank(s, at + 1)


def _skip_blank(s: str, at: int) -> int:
    """The index of the first non-blank character from ``at`` (Graph sends compact
    JSON, so this is nearly always ``at`` itself)."""
    if s[at : at + 1] in _BLANK:
        return _WS.match(s, at).end()  # type: ignore[union-attr]
    return at


_BLANK = frozenset(" \t\n\r")


def parse_delta_page_raw(raw: bytes | str) -> tuple[DeltaPage, int]:
    """A whole page read with :class:`PageReader`: GraphUser and Removal entries, and
    how many entries were skipped."""
    reader = PageReader(raw)
    entries = tuple(reader.entries())
    page = DeltaPage(entries, next_link=reader.next_link, delta_link=reader.delta_link)
    return page, reader.skipped


def person_from_graph(text: str) -> Person:
    """The Person of a user object's JSON text (a GraphUser's, or a mirror row's)."""
    return person_from_graph_object(json.loads(text), text)


def person_from_graph_object(obj: dict[str, Any], text: str) -> Person:
    """The Person of a parsed user object whose JSON text is ``text``."""
    fix = _fix_surrogates if _has_surrogate_escape(text) else None
    return _person(obj.get, fix)


def _graph_entry(
    obj: Any, s: str, start: int, end: int, fix: Callable[[str], str] | None
) -> GraphUser | Removal | None:
    found = _id_or_removal(obj)
    if not isinstance(found, str):
        return found
    uid, get = found, obj.get
    text = s[start:end]
    return GraphUser(
        uid,
        text,
        content_hash(text),
        _column(get("userPrincipalName"), fix),
        _column(get("mail"), fix),
        _column(get("displayName"), fix),
        _enabled(get("accountEnabled")),
        _user_type(get, fix),
    )


def _column(value: Any, fix: Callable[[str], str] | None) -> str:
    """A text property as the Person built from the same object holds it."""
    if value is None:
        return ""
    if type(value) is not str:
        value = _coerce_text(value)
    return fix(value) if fix is not None else value


def _links(next_value: Any, delta_value: Any) -> tuple[str | None, str | None]:
    next_link = _link(next_value)
    delta_link = _link(delta_value)
    if next_link is None and delta_link is None:
        raise GraphError(
            "Microsoft Graph sent a users/delta page with neither @odata.nextLink nor "
            "@odata.deltaLink, so the round cannot continue",
            "run again; if it persists, the response is not from Graph",
        )
    if next_link is not None and delta_link is not None:
        # Graph never sends both. Following the nextLink is safe; saving a deltaLink
        # too early would lose the rest of the round.
        log.warning("users/delta page carries both nextLink and deltaLink; following nextLink")
        delta_link = None
    return next_link, delta_link


def _not_json(exc: BaseException) -> GraphError:
    return GraphError(
        f"Microsoft Graph sent a users/delta page that is not valid JSON ({exc})",
        "this is usually a proxy or gateway answering instead of Graph; run again",
    )


def _scan(s: str, at: int) -> tuple[Any, int]:
    """One JSON value at ``s[at]``: (value, index after it)."""
    try:
        return _SCAN(s, at)  # type: ignore[no-any-return]
    except StopIteration:  # the scanner's way of saying "no value here"
        _fail(s, at)
        raise  # unreachable


def _fail(s: str, at: int) -> Any:
    raise ValueError(f"unexpected {s[at : at + 1]!r} at char {at}")
