"""The local backend: publishes each card as a folder of static files.

    {output}/index.html                         the organizations (when ``index``)
    {output}/{org}/index.html                   the org's cards (written by finish)
    {output}/{org}/{card_id}/index.html         the card page, written last
                            /card.vcf, qr.svg, qr.png, photo.jpg

A card's URL is ``{base_url}/{org}/{card_id}/``. Pages link their files with
relative URLs and inline their CSS, so the site can be served from any path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ...errors import BackendError, ConfigError
from ...models import Card, OrgProfile, Published
from ...templates import DEFAULT
from . import options as local_options
from . import qr, site, vcard
from .render import TemplateSet
from .text import one_line
from .view import CardView, OrgView, card_view, org_view

# Bump when a code change alters what is rendered, so every card is republished.
RENDER_VERSION = "1"


@dataclass(frozen=True)
class _Org:
    profile: OrgProfile
    view: OrgView
    templates: TemplateSet
    fingerprint: str


@dataclass(frozen=True)
class IndexEntry:
    href: str
    name: str


class LocalBackend:
    """Publishes cards as a static site under ``options["output"]``.

    Parallel-safe: instances built from the same options may publish different cards
    from several processes at once (each card is its own folder; shared folders are
    only ever created, never replaced). Writes are atomic but made durable by
    :meth:`flush`, once per batch."""

    name = "local"
    parallel_safe = True

    def __init__(self, options: dict[str, Any], orgs: list[OrgProfile]) -> None:
        self.options = local_options.parse(options)
        self.site = site.Site(self.options.output)
        self._unflushed = False
        sets = _template_sets(orgs)
        self._orgs = {org.slug: self._org_entry(org, sets[org.template]) for org in orgs}
        # The organizations page has no template of its own: it uses the one every
        # organization shares, else the default set.
        shared = {org.template for org in orgs}
        root_spec = shared.pop() if len(shared) == 1 else DEFAULT
        self._root_templates = sets.get(root_spec) or TemplateSet(DEFAULT, "templates")

    def _org_entry(self, org: OrgProfile, templates: TemplateSet) -> _Org:
        key = "\0".join((RENDER_VERSION, self.options.base_url, org.name, templates.digest))
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
        return _Org(org, org_view(org), templates, fingerprint)

    def url(self, org: str, card_id: str) -> str:
        org, card_id = site.check_id(org, "organization"), site.check_id(card_id, "card id")
        return f"{self.options.base_url}/{org}/{card_id}/"

    def fingerprint(self, org: str) -> str:
        return self._org(org).fingerprint

    def publish(self, card: Card) -> Published:
        org = self._org(card.org)
        url = self.url(card.org, card.card_id)
        folder = self.site.card_dir(card.org, card.card_id)
        try:
            self._unflushed = True
            if not _make_dir(folder):
                site.sweep_temp_files(folder)
            files = self._publish_files(card, org, url, folder)
        except OSError as exc:
            raise BackendError(f"could not write card {card.org}/{card.card_id}: {exc}") from exc
        except jinja2.TemplateError as exc:
            raise BackendError(
                f"the template of {card.org} failed on card {card.card_id}: {exc}",
                f"check the template set {org.profile.template!r}",
            ) from exc
        return Published(url, files)

    def _publish_files(self, card: Card, org: _Org, url: str, folder: Path) -> dict[str, str]:
        """Write the files of ``card``; the page goes last, so it never links a file
        that is not there yet, and withdrawn data is gone before the page says so."""
        version = hashlib.sha256(card.photo.web).hexdigest()[:12] if card.photo else ""
        view = card_view(card, org.view, url, version)
        if card.active:
            files = self._write_contact(card, view, folder)
        else:
            files = {}
            for name in site.CONTACT_FILES:
                site.remove_file(folder / name)
        page = folder / site.PAGE
        site.write_if_changed(page, org.templates.render_card(card=view, org=org.view))
        files["html"] = str(page)
        return files

    def _write_contact(self, card: Card, view: CardView, folder: Path) -> dict[str, str]:
        photo = folder / site.PHOTO
        if card.photo:
            site.write_if_changed(photo, card.photo.web)
        else:
            site.remove_file(photo)
        site.write_if_changed(folder / site.VCARD, vcard.build(card, view.url, view.company))
        svg, png = folder / site.QR_SVG, folder / site.QR_PNG
        if not qr.encodes(svg, png, view.url):
            svg_bytes, png_bytes = qr.make(view.url)
            # PNG first: an SVG naming the URL is what says both are done.
            site.write_if_changed(png, png_bytes)
            site.write_if_changed(svg, svg_bytes)
        files = {"vcard": folder / site.VCARD, "qr_svg": svg, "qr_png": png}
        if card.photo:
            files["photo"] = photo
        return {kind: str(path) for kind, path in files.items()}

    def remove(self, org: str, card_id: str) -> None:
        # Organizations no longer configured can still be cleaned up.
        folder = self.site.card_dir(org, card_id)
        try:
            self._unflushed = True
            site.remove_card_dir(folder)
        except OSError as exc:
            raise BackendError(f"could not remove card {org}/{card_id}: {exc}") from exc

    def card_ids(self, org: str) -> set[str]:
        try:
            return self.site.card_ids(org)
        except OSError as exc:
            raise BackendError(f"could not list the cards of {org}: {exc}") from exc

    def finish(self, org: str, cards: Sequence[tuple[str, str]]) -> None:
        """Write the organization's index page and the organizations page, or
        delete them when ``index`` is off, so turning it off really unlists cards."""
        entry = self._org(org)
        org_page = self.site.org_dir(org) / site.PAGE
        root_page = self.site.root / site.PAGE
        try:
            if not self.options.index:
                self._unflushed = True
                site.remove_file(org_page)
                site.remove_file(root_page)
                return
            entries = [
                IndexEntry(f"{site.check_id(cid, 'card id')}/", one_line(n)) for cid, n in cards
            ]
            org_page.parent.mkdir(parents=True, exist_ok=True)
            self._unflushed = True
            html = entry.templates.render_index(
                title=entry.view.name, org=entry.view, entries=entries
            )
            site.write_if_changed(org_page, html)
            site.write_if_changed(root_page, self._root_index())
        except OSError as exc:
            raise BackendError(f"could not write the index of {org}: {exc}") from exc
        except jinja2.TemplateError as exc:
            raise BackendError(f"the index template of {org} failed: {exc}") from exc

    def _root_index(self) -> bytes:
        orgs = [IndexEntry(f"{slug}/", entry.view.name) for slug, entry in self._orgs.items()]
        return self._root_templates.render_index(title="Business cards", org=None, entries=orgs)

    def flush(self) -> None:
        """Make every file written or removed so far durable (one syncfs)."""
        if not self._unflushed:
            return
        try:
            if self.site.root.exists():
                site.sync(self.site.root)
        except OSError as exc:
            raise BackendError(f"could not make the card site durable: {exc}") from exc
        self._unflushed = False

    def close(self) -> None:
        self.flush()

    def _org(self, slug: str) -> _Org:
        try:
            return self._orgs[slug]
        except KeyError:
            raise BackendError(
                f"unknown organization {slug!r}", "add it to the configuration"
            ) from None


def _template_sets(orgs: list[OrgProfile]) -> dict[str, TemplateSet]:
    """One compiled set per distinct ``template``, checking each organization
    the way config validation does, with the same key paths."""
    sets: dict[str, TemplateSet] = {}
    problems: list[str] = []
    for i, org in enumerate(orgs):
        if not site.ID_PATTERN.fullmatch(org.slug):
            problems.append(f"organizations[{i}].slug: must match {site.ID_PATTERN.pattern}")
        if org.template not in sets:
            try:
                sets[org.template] = TemplateSet(org.template, f"organizations[{i}].template")
            except ConfigError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return sets


def _make_dir(folder: Path) -> bool:
    """Create a card folder (and its organization's); return whether it is new."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        return False
    return True
