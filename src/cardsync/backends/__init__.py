"""Pluggable card publishers.

The contract every backend honours is documented on :class:`Backend`. Built-in
backends are found through a lazy name -> import path map, so choosing one never
imports the others; third-party packages add their own through the
``cardsync.backends`` entry-point group::

    [project.entry-points."cardsync.backends"]
    mybackend = "mypackage.backend:MyBackend"

A backend class is constructed as ``cls(options, orgs)`` where ``options`` is the
``[backend]`` config table without ``type`` and ``orgs`` is a list of
:class:`~cardsync.models.OrgProfile`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError
from ..models import Card, OrgProfile, Published

BUILTIN: dict[str, str] = {
    "local": "cardsync.backends.local:LocalBackend",
    "memory": "cardsync.backends.memory:MemoryBackend",
}

ENTRY_POINT_GROUP = "cardsync.backends"


@runtime_checkable
class Backend(Protocol):
    """The contract between cardsync and a card publisher.

    - ``publish(card)`` creates the card or replaces it. It is idempotent and adopts a
      card that already exists under ``card.card_id`` (for example one written before
      a crash, but not yet recorded), never making a second one. It returns the
      card's public URL and the files it wrote. A card with ``active=False`` stays
      reachable at the same URL but says it is no longer active, and its contact data
      (vCard, QR code, photo) are withdrawn. A card of an organization the backend
      was not constructed with raises :class:`~cardsync.errors.BackendError`.
    - ``remove(org, card_id)`` deletes the card. Removing a card that is already gone
      is not an error.
    - ``card_ids(org)`` lists the ids of the cards that exist now, for reconciliation.
    - ``url(org, card_id)`` is the URL a card has, or would have, without I/O.
    - ``finish(org, cards)`` is called once per organization after a batch of changes,
      with every card the organization now has (``(card_id, display name)`` pairs,
      sorted by name), for example to write an index page.
    - ``fingerprint(org)`` is a short string that changes whenever the way cards are
      rendered changes (template, base URL, ...); cardsync republishes every card of
      that organization when it changes.
    - ``close()`` flushes and releases resources. It is called exactly once.

    Failures raise :class:`~cardsync.errors.BackendError`; cardsync then retries the
    action on the next run.

    Two optional members make big runs fast (:func:`flush` and :func:`parallel_safe`
    call them, so a backend without them still works):

    - ``flush()``: after ``flush()`` returns, everything published and removed so far
      survives a power loss. With it, ``publish`` and ``remove`` need not be durable
      when they return: cardsync calls ``flush()`` once per batch of actions, before it
      records the batch in its ledger (a crash before that replans the batch, and
      publishing adopts what is there). Without it, ``publish`` and ``remove`` must be
      durable when they return.
    - ``parallel_safe = True`` (a class attribute): ``publish`` may run in several
      processes at once, each with its own instance built by :func:`create` from the
      same options, each publishing different cards (and flushing its own batches).
      cardsync then renders big batches on every core; ``remove``, ``finish`` and the
      ledger stay in the main process.
    """

    name: str

    def publish(self, card: Card) -> Published: ...

    def remove(self, org: str, card_id: str) -> None: ...

    def card_ids(self, org: str) -> set[str]: ...

    def url(self, org: str, card_id: str) -> str: ...

    def finish(self, org: str, cards: Sequence[tuple[str, str]]) -> None: ...

    def fingerprint(self, org: str) -> str: ...

    def close(self) -> None: ...


def flush(backend: Backend) -> None:
    """Make what ``backend`` published so far durable (a no-op for backends without
    ``flush``, whose writes are durable when they return)."""
    method = getattr(backend, "flush", None)
    if method is not None:
        method()


def parallel_safe(backend: Backend) -> bool:
    """Whether ``backend`` declares that other instances may publish at the same time."""
    return getattr(type(backend), "parallel_safe", False) is True


def available() -> list[str]:
    """Names of every backend that can be chosen with ``[backend] type``."""
    names = set(BUILTIN)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def load_class(name: str) -> type:
    """Import the backend class registered under ``name``."""
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    raise ConfigError(
        [f"backend.type: unknown backend {name!r}; available: {', '.join(available())}"]
    )


def create(name: str, options: dict[str, Any], orgs: Sequence[OrgProfile]) -> Backend:
    """Build the backend ``name`` with its ``[backend]`` options."""
    cls = load_class(name)
    return cls(dict(options), list(orgs))  # type: ignore[no-any-return]
