"""A small declarative schema engine for ``cardsync.toml``.

A :class:`Table` maps each key to a :class:`Field` (kind, default, check). Validating
collects every problem with its key path (``organizations[1].entra.cloud: ...``)
instead of stopping at the first, and never echoes a value that is secret, marked
``echo=False``, or taken from the environment. Values that fail are replaced by
:data:`INVALID` so the caller can keep checking the rest of the file.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


REQUIRED: Any = _Marker("REQUIRED")  # default: the key must be present
OMIT: Any = _Marker("OMIT")  # default: leave the key out of the result when absent
INVALID: Any = _Marker("INVALID")  # a value that failed validation (already reported)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# TOML value types as users know them; bool before int (bool subclasses int),
# datetime before date (datetime subclasses date).
_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (dict, "a table"),
    (list, "an array"),
    (dt.datetime, "a date-time"),
    (dt.date, "a date"),
    (dt.time, "a time"),
)


class Invalid(Exception):
    """Raised by a check. The engine adds the key path and, unless hidden, the value."""

    def __init__(
        self, message: str, *, show_value: bool = True, suggestion: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.show_value = show_value
        self.suggestion = suggestion

    def render(self, value: Any, hidden: bool) -> str:
        text = self.message
        if self.show_value and not hidden:
            text += f", got {value!r}"
        if self.suggestion:
            text += f"; did you mean {self.suggestion!r}?"
        return text


Check = Callable[[Any, "Context"], Any]


@dataclass(frozen=True)
class Field:
    """One key: its TOML kind, default (REQUIRED, OMIT, None or a value) and optional check.

    ``check(value, ctx)`` returns the converted value or raises :class:`Invalid`.
    ``secret`` values are never echoed in messages, nor are values with ``echo=False``
    (keys where a pasted secret tends to land by mistake).
    """

    kind: type | Table | ArrayOf
    default: Any = REQUIRED
    check: Check | None = None
    secret: bool = False
    echo: bool = True


@dataclass(frozen=True)
class Table:
    fields: Mapping[str, Field]
    extra: bool = False  # keep unknown keys as they are instead of reporting them


@dataclass(frozen=True)
class ArrayOf:
    """An array of tables (``[[name]]``)."""

    table: Table
    min_items: int = 0
    too_few: str = "too few items"


def type_name(value: Any) -> str:
    for typ, name in _TYPE_NAMES:
        if isinstance(value, typ):
            return name
    return type(value).__name__


def expected(kind: type | Table | ArrayOf) -> str:
    if isinstance(kind, Table):
        return "a table"
    if isinstance(kind, ArrayOf):
        return "an array of tables"
    return next((name for typ, name in _TYPE_NAMES if typ is kind), kind.__name__)


def _is_kind(value: Any, kind: type | Table | ArrayOf) -> bool:
    if isinstance(kind, Table):
        return isinstance(value, dict)
    if isinstance(kind, ArrayOf):
        return isinstance(value, list)
    if isinstance(value, bool) and kind is not bool:
        return False
    return isinstance(value, kind)


def suggest(word: str, choices: Any) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


class Context:
    """Collects problems while a file is validated; knows the env and the config folder."""

    def __init__(self, base_dir: Path, env: Mapping[str, str]) -> None:
        self.base_dir = base_dir
        self.env = env
        self.problems: list[str] = []

    def problem(self, at: str, message: str) -> None:
        self.problems.append(f"{at}: {message}" if at else message)

    def path(self, value: str) -> Path:
        """A path from the file: ``~`` expanded, relative to the config file's folder."""
        return Path(os.path.abspath(self.base_dir / Path(value).expanduser()))

    def table(self, data: Mapping[str, Any], spec: Table, at: str = "") -> dict[str, Any]:
        """Validate ``data`` in schema order, then report (or keep) unknown keys."""
        out: dict[str, Any] = {}
        for key, fld in spec.fields.items():
            where = join(at, key)
            if key in data:
                out[key] = self.value(data[key], fld, where)
            elif fld.default is REQUIRED:
                self.problem(where, "required key is missing")
                out[key] = INVALID
            elif fld.default is None:
                out[key] = None
            elif fld.default is not OMIT:  # defaults are checked too: paths get resolved
                out[key] = self.value(fld.default, fld, where)
        for key in [k for k in data if k not in spec.fields]:
            if spec.extra:
                out[key] = data[key]
                continue
            hint = suggest(key, spec.fields)
            self.problem(
                join(at, key),
                f"unknown key, did you mean {hint!r}?"
                if hint
                else f"unknown key; valid keys here: {', '.join(spec.fields)}",
            )
        return out

    def value(self, raw: Any, fld: Field, at: str) -> Any:
        hidden = fld.secret or not fld.echo
        if fld.kind is str and isinstance(raw, str) and (ref := _ENV_REF.fullmatch(raw)):
            raw = self.env.get(ref[1])
            if raw is None:
                self.problem(at, f"environment variable {ref[1]} is not set")
                return INVALID
            if raw == "":
                self.problem(at, f"environment variable {ref[1]} is empty")
                return INVALID
            hidden = True
        if not _is_kind(raw, fld.kind):
            note = " (${...} works for string values only)" if _ENV_REF.fullmatch(str(raw)) else ""
            self.problem(at, f"expected {expected(fld.kind)}, got {type_name(raw)}{note}")
            return INVALID
        if isinstance(fld.kind, Table):
            return self.table(raw, fld.kind, at)
        if isinstance(fld.kind, ArrayOf):
            return self.array(raw, fld.kind, at)
        if raw == "":
            self.problem(at, "must not be empty")
            return INVALID
        if fld.check is None:
            return raw
        try:
            return fld.check(raw, self)
        except Invalid as exc:
            self.problem(at, exc.render(raw, hidden))
            return INVALID

    def array(self, items: list[Any], spec: ArrayOf, at: str) -> list[Any]:
        if len(items) < spec.min_items:
            self.problem(at, spec.too_few)
        return [self.value(item, Field(spec.table), f"{at}[{i}]") for i, item in enumerate(items)]

    def expand(self, raw: Any, at: str) -> tuple[Any, bool]:
        """Replace ``${NAME}`` strings anywhere in an unvalidated value.

        Returns the value and whether any part of it came from the environment.
        """
        if isinstance(raw, str):
            ref = _ENV_REF.fullmatch(raw)
            if not ref:
                return raw, False
            if ref[1] not in self.env:
                self.problem(at, f"environment variable {ref[1]} is not set")
                return INVALID, True
            return self.env[ref[1]], True
        if isinstance(raw, list):
            pairs = [self.expand(item, f"{at}[{i}]") for i, item in enumerate(raw)]
            return [v for v, _ in pairs], any(e for _, e in pairs)
        if isinstance(raw, dict):
            expanded = {k: self.expand(v, join(at, k)) for k, v in raw.items()}
            return {k: v for k, (v, _) in expanded.items()}, any(e for _, e in expanded.values())
        return raw, False


def strings_in(value: Any) -> Iterator[str]:
    """Every non-empty string in a value, however deeply nested."""
    if isinstance(value, str) and value:
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)


# Generic checks --------------------------------------------------------------------


def one_of(*choices: str) -> Check:
    def check(value: str, ctx: Context) -> str:
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise Invalid(f"expected one of {listed}", suggestion=suggest(value, choices))
        return value

    return check


def between(low: int, high: int) -> Check:
    def check(value: int, ctx: Context) -> int:
        if not low <= value <= high:
            raise Invalid(f"must be between {low} and {high}")
        return value

    return check


def matches(pattern: str, description: str) -> Check:
    regex = re.compile(pattern)

    def check(value: str, ctx: Context) -> str:
        if not regex.fullmatch(value):
            raise Invalid(f"expected {description}")
        return value

    return check


def strings(value: list[Any], ctx: Context) -> tuple[str, ...]:
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Invalid(
                f"expected an array of strings, item {i} is {type_name(item)}", show_value=False
            )
    return tuple(value)


def strings_matching(pattern: str, description: str, lower: bool = False) -> Check:
    """An array of strings, each matching ``pattern`` (optionally lower-cased)."""
    regex = re.compile(pattern)

    def check(value: list[Any], ctx: Context) -> tuple[str, ...]:
        items = strings(value, ctx)
        for i, item in enumerate(items):
            if not regex.fullmatch(item):
                raise Invalid(f"item {i} ({item!r}) is not {description}", show_value=False)
        return tuple(item.lower() for item in items) if lower else items

    return check


def path(value: str, ctx: Context) -> Path:
    return ctx.path(value)


def existing_file(value: str, ctx: Context) -> Path:
    found = ctx.path(value)
    if not found.is_file():
        raise Invalid(f"file not found: {found}", show_value=False)
    return found


_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _split(value: str, schemes: tuple[str, ...]) -> SplitResult:
    if any(ch.isspace() for ch in value):
        raise Invalid("a URL cannot contain spaces")
    url = urlsplit(value)
    try:
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise Invalid("the port is not a number between 0 and 65535") from None
    if url.scheme not in schemes:
        raise Invalid(f"expected a URL starting with {' or '.join(f'{x}://' for x in schemes)}")
    if not url.hostname or url.username is not None:
        raise Invalid("expected a URL with a host name (and no user name)", show_value=False)
    if url.query or url.fragment or value.endswith(("?", "#")):
        raise Invalid("the URL must not have a query (?...) or fragment (#...)")
    host = url.hostname
    if not _HOST.fullmatch(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise Invalid("the host name is not valid") from None
    return url


def http_url(value: str, ctx: Context) -> str:
    _split(value, ("http", "https"))
    return value.rstrip("/")


def graph_url(value: str, ctx: Context) -> str:
    url = _split(value, ("https",))
    if not url.path.rstrip("/").endswith(("/v1.0", "/beta")):
        raise Invalid("expected an https URL ending with /v1.0 or /beta")
    return value.rstrip("/")


def authority(value: str, ctx: Context) -> str:
    if value.startswith("http://"):
        raise Invalid("http:// is refused: tokens are only requested over https", show_value=False)
    url = _split(value if "://" in value else f"https://{value}", ("https",))
    if url.path.strip("/"):
        raise Invalid("expected a host name or an https://host[:port] URL without a path")
    return f"https://{url.netloc}"


def syntax_problem(message: str, text: str) -> str:
    # tomllib (3.11) puts the position only in the message: "... (at line 3, column 7)".
    where = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if where:
        reason = message[: where.start()]
        return f"TOML syntax error at line {where[1]}, column {where[2]}: {reason}"
    reason = message.removesuffix(" (at end of document)")
    lines = text.splitlines() or [""]
    return (
        f"TOML syntax error at line {len(lines)}, column {len(lines[-1]) + 1}"
        f" (end of file): {reason}"
    )
