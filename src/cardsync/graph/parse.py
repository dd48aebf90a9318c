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
from typing import Any

from ..errors import GraphError
from ..models import CARD_FIELDS, DeltaPage, DirectoryUser, Person, Removal

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
    except (ValueError, UnicodeDecodeError) as exc:
        raise GraphError(
            f"Microsoft Graph sent a users/delta page that is not valid JSON ({exc})",
            "this is usually a proxy or gateway answering instead of Graph; run again",
        ) from exc
    if not isinstance(doc, dict):
        raise GraphError("Microsoft Graph sent a users/delta page that is not a JSON object")

    next_link = _link(doc.get("@odata.nextLink"))
    delta_link = _link(doc.get("@odata.deltaLink"))
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
    if type(obj) is not dict:
        return None
    uid = obj.get("id")
    if type(uid) is not str or not _ID.fullmatch(uid):
        return None
    removed = obj.get("@removed")
    if removed is not None:
        reason = removed.get("reason") if type(removed) is dict else None
        return Removal(uid, reason if reason in _REMOVAL_REASONS else "changed")

    get = obj.get
    fields: dict[str, Any] = {}
    for key, attr in _TEXT_FIELDS:
        value = get(key)
        if value is None:
            continue
        if type(value) is not str:
            value = _coerce_text(value)
        if fix is not None:
            value = fix(value)
        if value:
            fields[attr] = value
    phones = get("businessPhones")
    if phones:
        fields["business_phones"] = _phones(phones, fix)

    user_type = get("userType")
    if type(user_type) is not str or not user_type:
        user_type = "Member"
    elif fix is not None:
        user_type = fix(user_type)
    return DirectoryUser(uid, Person(**fields), _enabled(get("accountEnabled")), user_type)


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
    return b"\\u" in raw and _SURROGATE_ESCAPE.search(raw) is not None


def _fix_surrogates(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", text)
