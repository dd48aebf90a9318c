"""The operations behind the CLI, as plain functions: the CLI only parses
arguments, calls these and renders what they return."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from . import backends
from .config import Config, OrgConfig
from .errors import UsageError
from .models import OrgProfile
from .state import State, lock_for, open_state
from .sync import OrgOutcome, Reporter, Source, Syncer
from .workers import BackendSpec


def find_org(config: Config, slug: str) -> OrgConfig:
    """The organization ``slug``, or a usage error listing the configured ones."""
    try:
        return config.org(slug)
    except KeyError:
        names = ", ".join(o.slug for o in config.organizations)
        raise UsageError(
            f"no organization {slug!r} in the config", f"use one of: {names}"
        ) from None


def org_profiles(config: Config) -> list[OrgProfile]:
    return [OrgProfile(o.slug, o.name, o.template) for o in config.organizations]


def make_backend(config: Config) -> backends.Backend:
    return backends.create(config.backend.type, config.backend.options, org_profiles(config))


def backend_spec(config: Config) -> BackendSpec:
    """How worker processes build their own instance of the configured backend."""
    return BackendSpec(config.backend.type, dict(config.backend.options), org_profiles(config))


def graph_source(org: OrgConfig) -> Source:
    from .graph import GraphSource  # heavy: imports msgraph only when Graph is needed

    return GraphSource(org.entra)


def photo_refresher(config: Config, reporter: Reporter | None = None) -> Any:
    """The photo step of a sync cycle (cardsync.photos.PhotoSync). Always present: for an
    organization with photos off it only clears photos stored while they were on."""
    from .photos import PhotoSync  # msgraph and Pillow load only when photos are used

    return PhotoSync(config, reporter)


@contextlib.contextmanager
def syncer(
    config: Config,
    reporter: Reporter | None = None,
    sources: Any = graph_source,
    close_sources: bool = True,
    photos: Any = None,
) -> Iterator[Syncer]:
    """A Syncer with its state and backend, holding the run lock until exit.

    The daemon passes a caching ``sources`` factory, ``close_sources=False`` and its
    own long-lived ``photos`` refresher, so that Graph tokens and connections (the
    photo app's too) outlive one cycle; it closes them itself."""
    from .scope import ScopeSync

    lock = lock_for(config.state.path)
    lock.acquire()
    try:
        state = open_state(config.state.path)
        try:
            backend = make_backend(config)
            own_photos = photos is None
            if own_photos:
                photos = photo_refresher(config, reporter)
            sync = Syncer(
                config, state, backend, sources, reporter, photos=photos,
                scope=ScopeSync(reporter), workers=backend_spec(config),
            )
            try:
                yield sync
            finally:
                try:
                    if close_sources:
                        sync.close()
                finally:
                    if own_photos:
                        photos.close()
                backend.close()
        finally:
            state.close()
    finally:
        lock.release()


def run(
    config: Config,
    *,
    dry_run: bool = False,
    orgs: Sequence[str] | None = None,
    reporter: Reporter | None = None,
    sources: Any = graph_source,
    allow_deletes: bool = False,
) -> list[OrgOutcome]:
    with syncer(config, reporter, sources) as sync:
        return sync.cycle(dry_run=dry_run, orgs=orgs, allow_deletes=allow_deletes)


def status(config: Config) -> dict[str, Any]:
    """The ``status --json`` document."""
    state = open_state(config.state.path)
    try:
        organizations = []
        for org in config.organizations:
            last = state.last_run(org.slug)
            counts = state.counts(org.slug)
            organizations.append(
                {
                    "slug": org.slug,
                    "name": org.name,
                    "last_sync": last.finished_at if last else None,
                    "last_result": last.result if last else None,
                    "last_error": last.error if last else None,
                    "last_counts": last.counts if last else {},
                    "users": counts["users"],
                    "cards": counts["cards"],
                    "seats": org.seats,
                    "seats_used": state.seats_used(org.slug),
                    "quarantine": state.quarantine(org.slug),
                    "holds": last.holds if last else [],
                }
            )
        return {"organizations": organizations}
    finally:
        state.close()


def list_cards(config: Config, org: str | None = None) -> list[dict[str, Any]]:
    """The ``cards list --json`` document."""
    state: State = open_state(config.state.path)
    try:
        return [
            {
                "org": card.org,
                "user_id": card.user_id,
                "user_principal_name": card.person.user_principal_name,
                "display_name": card.person.name,
                "email": card.person.email,
                "card_id": card.card_id,
                "url": card.url,
                "active": card.active,
                "files": {
                    kind: card.files.get(kind)
                    for kind in ("html", "vcard", "qr_svg", "qr_png")
                },
            }
            for card in state.cards(org)
        ]
    finally:
        state.close()


def provision(
    config: Config, slug: str, key: str, reporter: Reporter | None = None,
    sources: Any = graph_source,
) -> OrgOutcome:
    """Provisioning on demand: sync one user now, through Graph, with every rule."""
    org = find_org(config, slug)
    with syncer(config, reporter, sources) as sync:
        with sync.state.transaction():
            for each in config.organizations:
                sync.state.apply_people(each.slug, ((p.mail, p.role) for p in each.people))
        return sync.provision(org, key)
