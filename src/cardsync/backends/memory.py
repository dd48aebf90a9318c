"""A backend that keeps cards in memory: the fake that cardsync's own tests publish
through. It honours the whole :class:`~cardsync.backends.Backend` contract (the
shared contract suite runs against it), so a test that passes with it tests real
behaviour rather than a mock's script.

Options: ``base_url`` (default ``memory://cards``) and ``fail_user_ids``, the
users whose cards fail to publish with :class:`~cardsync.errors.BackendError`,
for partial-failure tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from ..errors import BackendError, ConfigError
from ..models import Card, OrgProfile, Published

# Part of every fingerprint, like the local backend's: bump it to test a rendering change.
RENDER_VERSION = "1"


class MemoryBackend:
    """Cards in a dict, and a log of every call.

    ``cards`` maps ``(org, card_id)`` to the last :class:`Card` published; pass the
    ``cards`` of an earlier instance to make a new one that sees the same cards, as
    a second run sees what the first published. ``calls`` lists each call in order:
    ``("publish", org, card_id)``, ``("remove", org, card_id)``, ``("finish", org,
    card_id, ...)``, ``("flush",)`` and ``("close",)``; a publish that fails is logged
    too. It is not parallel-safe: its cards live in this process.
    ``indexes`` holds the ``cards`` argument of the last ``finish`` of each org.
    """

    name = "memory"

    def __init__(
        self,
        options: dict[str, Any],
        orgs: list[OrgProfile],
        cards: dict[tuple[str, str], Card] | None = None,
    ) -> None:
        self.base_url, self.fail_user_ids = _parse(options)
        self.orgs = {org.slug: org for org in orgs}
        self.cards = {} if cards is None else cards
        self.calls: list[tuple[str, ...]] = []
        self.indexes: dict[str, list[tuple[str, str]]] = {}
        self.closed = False

    def url(self, org: str, card_id: str) -> str:
        return f"{self.base_url}/{org}/{card_id}/"

    def fingerprint(self, org: str) -> str:
        key = "\0".join((RENDER_VERSION, self.base_url, self._org(org).template))
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def publish(self, card: Card) -> Published:
        self._use(("publish", card.org, card.card_id))
        self._org(card.org)
        if card.user_id in self.fail_user_ids:
            raise BackendError(f"memory backend: publishing {card.card_id} fails by request")
        self.cards[(card.org, card.card_id)] = card
        return Published(self.url(card.org, card.card_id))

    def remove(self, org: str, card_id: str) -> None:
        self._use(("remove", org, card_id))
        self.cards.pop((org, card_id), None)

    def card_ids(self, org: str) -> set[str]:
        return {card_id for (card_org, card_id) in self.cards if card_org == org}

    def finish(self, org: str, cards: Sequence[tuple[str, str]]) -> None:
        self._use(("finish", org, *(card_id for card_id, _ in cards)))
        self._org(org)
        self.indexes[org] = list(cards)

    def flush(self) -> None:
        self._use(("flush",))

    def close(self) -> None:
        self._use(("close",))
        self.closed = True

    def published(self, org: str) -> dict[str, Card]:
        """The cards of ``org`` by id: a convenience for assertions."""
        return {cid: card for (card_org, cid), card in self.cards.items() if card_org == org}

    def _use(self, call: tuple[str, ...]) -> None:
        # Calling a closed backend is a bug in the caller, not a publishing failure
        # to retry: fail the test loudly instead of raising BackendError.
        if self.closed:
            raise RuntimeError(f"memory backend used after close: {call}")
        self.calls.append(call)

    def _org(self, slug: str) -> OrgProfile:
        try:
            return self.orgs[slug]
        except KeyError:
            raise BackendError(f"unknown organization {slug!r}") from None


def _parse(options: dict[str, Any]) -> tuple[str, frozenset[str]]:
    problems = [
        f"backend.{key}: unknown option"
        for key in options
        if key not in ("base_url", "fail_user_ids")
    ]
    base_url = options.get("base_url", "memory://cards")
    if not isinstance(base_url, str) or not base_url:
        problems.append("backend.base_url: must be a non-empty string")
    fail = options.get("fail_user_ids", ())
    if isinstance(fail, str) or not all(isinstance(user, str) for user in fail):
        problems.append("backend.fail_user_ids: must be a list of user ids")
    if problems:
        raise ConfigError(problems)
    return base_url.rstrip("/"), frozenset(fail)
