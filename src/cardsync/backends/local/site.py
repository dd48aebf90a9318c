"""The local site's layout on disk, and the only code that writes or deletes its files.

Every name under the output folder comes from an organization slug or a card id,
both checked against :data:`ID_PATTERN`, never from directory data: that is what
keeps ``../`` and friends out of paths.

Writes go to a temporary file in the target folder, then are renamed over the
target, so a reader (or a killed process) never sees half a file. A write whose
bytes equal the file already there is skipped: republishing leaves files and
mtimes untouched. Durability is per batch, not per file: :func:`sync` makes
everything written so far survive a power loss, with one ``syncfs`` of the whole
file system (measured: an fsync per file and folder cost ~13 ms a card, one
syncfs per batch of a few hundred cards under 0.1 ms a card; docs/performance.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ...errors import BackendError

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

PAGE = "index.html"
VCARD = "card.vcf"
QR_SVG = "qr.svg"
QR_PNG = "qr.png"
PHOTO = "photo.jpg"
# What an inactive card withdraws.
CONTACT_FILES = (VCARD, QR_SVG, QR_PNG, PHOTO)

# The site is public: files are world-readable whatever umask mkstemp applied.
FILE_MODE = 0o644


def check_id(value: object, what: str) -> str:
    """Return ``value`` if it is a safe slug or card id, else raise BackendError."""
    if isinstance(value, str) and ID_PATTERN.fullmatch(value):
        return value
    raise BackendError(
        f"refusing {what} {value!r}: it must match {ID_PATTERN.pattern}",
        "organization slugs and card ids become folder names, so only these are allowed",
    )


class Site:
    """Paths of the site rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def org_dir(self, org: str) -> Path:
        return self.root / check_id(org, "organization")

    def card_dir(self, org: str, card_id: str) -> Path:
        return self.org_dir(org) / check_id(card_id, "card id")

    def card_ids(self, org: str) -> set[str]:
        """Ids of the complete cards of ``org``: the page is written last, so a folder
        without one is a card whose first publish never finished."""
        try:
            entries = list(os.scandir(self.org_dir(org)))
        except FileNotFoundError:
            return set()
        return {
            e.name
            for e in entries
            if ID_PATTERN.fullmatch(e.name)
            and e.is_dir()
            and os.path.isfile(os.path.join(e.path, PAGE))
        }


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically make ``path`` hold ``data``; return whether anything was written."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), FILE_MODE)
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def sweep_temp_files(folder: Path) -> None:
    """Delete temp files left by a write that was killed between mkstemp and
    os.replace (a clean failure removes its own; a SIGKILL cannot)."""
    for entry in os.scandir(folder):
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def remove_file(path: Path) -> bool:
    """Delete ``path`` if it exists; return whether it did."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def remove_card_dir(path: Path) -> None:
    """Delete a card folder. The page goes first, so that a removal cut short
    leaves a folder that :meth:`Site.card_ids` no longer counts as a card."""
    remove_file(path / PAGE)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def sync(path: Path) -> None:
    """Make every write, rename and deletion so far on the file system holding
    ``path`` durable: Linux's ``syncfs``, else ``os.sync`` (which on Linux also
    waits for the data to reach the disk)."""
    syncfs = _syncfs()
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs failed: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


@functools.cache
def _syncfs() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # a libc without syncfs (very old glibc, musl builds)
        return None
