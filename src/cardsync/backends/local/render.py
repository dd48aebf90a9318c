"""Template sets: finding them, compiling them once, and fingerprinting them.

An organization's ``template`` is a built-in name (see
:func:`cardsync.templates.builtin_templates`) or a folder. Lookups fall back to
the default built-in set, so a folder may override only ``card.html.j2`` or only
``index.html.j2`` and still include the default ``style.css``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jinja2

from ...errors import ConfigError
from ...templates import BUILTIN_DIR, DEFAULT, builtin_templates

CARD = "card.html.j2"
INDEX = "index.html.j2"


class TemplateSet:
    """A compiled template set. Build one per distinct ``template`` value and share it:
    compiling is the slow part, rendering a card is a fraction of a millisecond."""

    def __init__(self, spec: str, key: str) -> None:
        self.folders = _resolve(spec, key)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.folders),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            # Templates are read once per run; checking mtimes on every render costs a stat.
            auto_reload=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        try:
            self.card = env.get_template(CARD)
            self.index = env.get_template(INDEX)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError([f"{key}: {exc.filename}:{exc.lineno}: {exc.message}"]) from exc
        self.digest = _digest(self.folders)

    def render_card(self, **context: Any) -> bytes:
        return self.card.render(**context).encode("utf-8")

    def render_index(self, **context: Any) -> bytes:
        return self.index.render(**context).encode("utf-8")


def _resolve(spec: str, key: str) -> list[Path]:
    """The folders searched for ``spec``, most specific first."""
    if spec in builtin_templates():
        folders = [BUILTIN_DIR / spec]
    else:
        folder = Path(spec).expanduser()
        if not folder.is_dir():
            names = ", ".join(builtin_templates())
            raise ConfigError(
                [f"{key}: {spec!r} is neither a built-in template ({names}) nor a folder"]
            )
        if not ((folder / CARD).is_file() or (folder / INDEX).is_file()):
            raise ConfigError([f"{key}: folder {spec!r} has neither {CARD} nor {INDEX}"])
        folders = [folder.resolve()]
    if spec != DEFAULT:
        folders.append(BUILTIN_DIR / DEFAULT)
    return folders


def _digest(folders: list[Path]) -> str:
    """A hash of every file the set could load, names and bytes, in a stable order.
    Hidden files (editor swap files and the like) are left out."""
    digest = hashlib.sha256()
    for rank, folder in enumerate(folders):
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                data = path.read_bytes()
                digest.update(f"{rank}\0{relative.as_posix()}\0{len(data)}\0".encode())
                digest.update(data)
    return digest.hexdigest()
