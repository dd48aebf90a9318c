"""The log of HTTP requests the emulator answered, so tests can assert what a client sent."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

# Request headers the log keeps: what a client says about itself. Never credentials.
RECORDED_HEADERS = ("user-agent", "client-request-id", "sdkversion", "prefer", "accept-encoding")


@dataclass(frozen=True)
class RequestRecord:
    """One answered request. ``path`` and ``query`` are percent-decoded; ``headers``
    holds the :data:`RECORDED_HEADERS` the request had (lower-cased names)."""

    method: str
    path: str
    query: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    @property
    def kind(self) -> str:
        """The route kind used by :meth:`RequestLog.stats`, e.g. ``users/delta`` or ``token``."""
        return route_kind(self.path)


def route_kind(path: str) -> str:
    # The SDK calls delta functions as "delta()"; links we hand out say "delta".
    parts = [p.removesuffix("()") for p in path.split("/") if p]
    if parts[:1] != ["v1.0"]:
        if "token" in parts:
            return "token"
        return "openid-configuration" if parts[-1:] == ["openid-configuration"] else "other"
    rest = parts[1:]
    if rest[:2] in (["users", "delta"], ["groups", "delta"]):
        return "/".join(rest[:2])
    if rest[:1] == ["users"] and "photo" in rest:
        return "photo/$value" if rest[-1] == "$value" else "photo"
    if rest[:2] == ["directory", "deletedItems"]:
        return "deletedItems"
    if rest[:1] == ["groups"] and rest[-1:] == ["members"]:
        return "groups/members"
    if rest[:1] == ["servicePrincipals"] and rest[-1:] == ["appRoleAssignedTo"]:
        return "appRoleAssignedTo"
    return rest[0] if rest else "other"


class RequestLog:
    """Thread-safe, append-only list of :class:`RequestRecord`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def stats(self) -> dict[str, int]:
        """Request counts by route kind, plus ``status:NNN`` counts for non-2xx answers."""
        counts: Counter[str] = Counter()
        for record in self.snapshot():
            counts[record.kind] += 1
            if not 200 <= record.status < 300:
                counts[f"status:{record.status}"] += 1
        return dict(counts)
