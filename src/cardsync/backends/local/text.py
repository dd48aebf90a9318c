"""Cleaning untrusted directory text before it reaches a page or a vCard.

Escaping is the job of jinja2 and vobject; this removes what no escaping makes
harmless everywhere: control characters, and line breaks in values that are one
line (a CR or LF in a name could start a new vCard property in a lax parser, and
Python's ``str.splitlines`` also breaks on VT, FF, NEL and U+2028/U+2029).
Formatting characters such as bidi overrides stay: templates isolate them.
"""

from __future__ import annotations

import re

_BREAKS = re.compile(r"(?:\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029])+")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(value: str) -> str:
    """``value`` as a single line: line breaks become a space, controls go."""
    return _CONTROLS.sub("", _BREAKS.sub(" ", value)).strip()


def lines(value: str) -> list[str]:
    """The non-empty lines of a multi-line value (a street address), each cleaned."""
    return [line for line in map(one_line, _BREAKS.split(value)) if line]
