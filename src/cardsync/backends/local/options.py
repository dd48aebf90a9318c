"""The ``[backend]`` options of the local backend, checked again here because a
backend can be built without going through config validation (tests, plugins)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...errors import ConfigError

KNOWN = ("output", "base_url", "index")


@dataclass(frozen=True)
class LocalOptions:
    output: Path
    base_url: str  # without a trailing slash
    index: bool = True


def parse(options: dict[str, Any]) -> LocalOptions:
    """Check ``options`` and return them typed; every problem is reported at once."""
    problems = [f"backend.{key}: unknown option" for key in options if key not in KNOWN]
    output = options.get("output")
    if not isinstance(output, str | Path) or not str(output).strip():
        problems.append("backend.output: required: the folder the card site is written to")
    base_url = options.get("base_url")
    if not isinstance(base_url, str) or not _is_site_url(base_url):
        problems.append(
            "backend.base_url: required: the http(s) URL the site is served at, "
            "e.g. https://example.org/cards (no query or fragment)"
        )
    index = options.get("index", True)
    if not isinstance(index, bool):
        problems.append("backend.index: must be true or false")
    if problems:
        raise ConfigError(problems)
    # Absolute, because Published.files reports absolute paths.
    return LocalOptions(Path(str(output)).expanduser().absolute(), str(base_url).rstrip("/"), index)


def _is_site_url(url: str) -> bool:
    parts = urlsplit(url)
    return (
        parts.scheme in ("http", "https")
        and bool(parts.netloc)
        and not parts.query
        and not parts.fragment
        and not any(ch.isspace() for ch in url)
    )
