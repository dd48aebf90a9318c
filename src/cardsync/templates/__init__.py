"""The built-in jinja2 template sets for the local card site.

Each set is a folder here holding ``card.html.j2`` and ``index.html.j2`` (and the
files they include). This module imports nothing heavy, because config validation
calls :func:`builtin_templates` before any backend is loaded.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent

# The set a folder template falls back to for the files it does not override.
DEFAULT = "classic"


def builtin_templates() -> list[str]:
    """Names accepted as an organization's ``template``, sorted."""
    return sorted(
        entry.name
        for entry in BUILTIN_DIR.iterdir()
        if entry.is_dir() and (entry / "card.html.j2").is_file()
    )
