"""The contract every backend honours, as one reusable test class.

Each test checks one clause of the :class:`cardsync.backends.Backend` docstring.
To run the suite against a backend, subclass :class:`BackendContract` in a test
module (its name starts with ``Test``) and provide:

- a ``make_backend`` fixture: a function ``make(orgs) -> backend`` whose every
  call builds a new instance on the same storage, as consecutive runs would;
- a ``broken_backend`` fixture: a backend whose publish of a card for the user
  :data:`FAILING_USER` fails (a read-only folder, a refusing server, ...);
- :meth:`BackendContract.inspect`: what a visitor finds at a card's URL.

Built-in backends run it from ``tests/test_backends.py``; a third-party package
can import this module and do the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import pytest

from cardsync.backends import Backend
from cardsync.errors import BackendError
from cardsync.models import Card, OrgProfile, Person, Published

FAILING_USER = "user-that-fails"

MakeBackend = Callable[[Sequence[OrgProfile]], Backend]


@dataclass(frozen=True)
class Shown:
    """What a visitor finds at a card's URL."""

    text: str  # everything the card shows, in any markup
    active: bool  # False when it says the card is no longer active
    contact_data: bool  # whether contact data (vCard, QR code, ...) is offered


def person(name: str = "Ada Lovelace", title: str = "Analyst") -> Person:
    given, _, surname = name.partition(" ")
    return Person(
        display_name=name,
        given_name=given,
        surname=surname,
        job_title=title,
        department="Engines",
        company_name="Acme",
        mail="ada@example.org",
        business_phones=("+44 20 7946 0000",),
        mobile_phone="+44 7700 900000",
    )


def card(card_id: str = "c0ffee01", org: str = "acme", **changes: object) -> Card:
    base = Card(org=org, card_id=card_id, user_id=f"user-{card_id}", person=person())
    return replace(base, **changes)


class BackendContract:
    """Tests every backend must pass. Subclasses provide the fixtures named above."""

    TEMPLATE = "classic"
    OTHER_TEMPLATE = "minimal"

    @property
    def orgs(self) -> list[OrgProfile]:
        return [
            OrgProfile("acme", "Acme Inc.", self.TEMPLATE),
            OrgProfile("globex", "Globex", self.TEMPLATE),
        ]

    def inspect(self, backend: Backend, org: str, card_id: str) -> Shown | None:
        """What is at the URL of ``card_id``, or None when nothing is there."""
        raise NotImplementedError

    @pytest.fixture
    def backend(self, make_backend: MakeBackend) -> Iterator[Backend]:
        backend = make_backend(self.orgs)
        yield backend
        backend.close()

    # publish

    def test_publish_returns_the_cards_url(self, backend: Backend) -> None:
        published = backend.publish(card())
        assert isinstance(published, Published)
        assert published.url == backend.url("acme", "c0ffee01")
        assert all(isinstance(path, str) for path in published.files.values())

    def test_url_is_known_before_publishing(self, backend: Backend) -> None:
        before = backend.url("acme", "c0ffee01")
        assert backend.publish(card()).url == before

    def test_urls_are_distinct_per_card_and_org(self, backend: Backend) -> None:
        urls = {backend.url(org, cid) for org in ("acme", "globex") for cid in ("a1", "b2")}
        assert len(urls) == 4

    def test_published_card_shows_its_content(self, backend: Backend) -> None:
        backend.publish(card())
        shown = self.inspect(backend, "acme", "c0ffee01")
        assert shown is not None
        assert shown.active and shown.contact_data
        assert "Ada Lovelace" in shown.text and "Analyst" in shown.text

    def test_publishing_twice_makes_one_card(self, backend: Backend) -> None:
        first = backend.publish(card())
        second = backend.publish(card())
        assert first.url == second.url
        assert backend.card_ids("acme") == {"c0ffee01"}

    def test_publish_adopts_a_card_an_earlier_instance_wrote(
        self, make_backend: MakeBackend
    ) -> None:
        earlier = make_backend(self.orgs)
        earlier.publish(card(person=person(title="Before the crash")))
        # The earlier run died before recording the card, so a later one publishes again.
        later = make_backend(self.orgs)
        assert later.card_ids("acme") == {"c0ffee01"}
        later.publish(card(person=person(title="After the restart")))
        assert later.card_ids("acme") == {"c0ffee01"}
        shown = self.inspect(later, "acme", "c0ffee01")
        assert shown is not None
        assert "After the restart" in shown.text and "Before the crash" not in shown.text

    def test_publish_replaces_the_content(self, backend: Backend) -> None:
        backend.publish(card())
        backend.publish(card(person=person("Grace Hopper", "Rear Admiral")))
        shown = self.inspect(backend, "acme", "c0ffee01")
        assert shown is not None
        assert "Grace Hopper" in shown.text and "Rear Admiral" in shown.text
        assert "Ada Lovelace" not in shown.text and "Analyst" not in shown.text

    def test_publish_for_an_unknown_org_raises(self, backend: Backend) -> None:
        with pytest.raises(BackendError):
            backend.publish(card(org="initech"))

    def test_a_failing_publish_raises_backend_error(self, broken_backend: Backend) -> None:
        with pytest.raises(BackendError):
            broken_backend.publish(card(user_id=FAILING_USER))

    # inactive cards

    def test_inactive_card_keeps_its_url_and_withdraws_contact_data(self, backend: Backend) -> None:
        url = backend.publish(card()).url
        assert backend.publish(card(active=False)).url == url
        assert backend.card_ids("acme") == {"c0ffee01"}
        shown = self.inspect(backend, "acme", "c0ffee01")
        assert shown is not None
        assert not shown.active and not shown.contact_data
        assert "ada@example.org" not in shown.text

    def test_reactivated_card_has_the_same_url_and_its_contact_data(self, backend: Backend) -> None:
        url = backend.publish(card()).url
        backend.publish(card(active=False))
        assert backend.publish(card()).url == url
        shown = self.inspect(backend, "acme", "c0ffee01")
        assert shown is not None and shown.active and shown.contact_data

    def test_a_card_can_start_inactive(self, backend: Backend) -> None:
        backend.publish(card(active=False))
        shown = self.inspect(backend, "acme", "c0ffee01")
        assert shown is not None and not shown.active and not shown.contact_data

    # remove and card_ids

    def test_remove_deletes_the_card(self, backend: Backend) -> None:
        backend.publish(card())
        backend.publish(card("beef0002"))
        backend.remove("acme", "c0ffee01")
        assert backend.card_ids("acme") == {"beef0002"}
        assert self.inspect(backend, "acme", "c0ffee01") is None
        assert self.inspect(backend, "acme", "beef0002") is not None

    def test_removing_a_missing_card_is_fine(self, backend: Backend) -> None:
        backend.remove("acme", "neverwas")
        backend.publish(card())
        backend.remove("acme", "c0ffee01")
        backend.remove("acme", "c0ffee01")
        assert backend.card_ids("acme") == set()

    def test_card_ids_of_an_org_without_cards_is_empty(self, backend: Backend) -> None:
        assert backend.card_ids("acme") == set()
        assert backend.card_ids("globex") == set()

    def test_card_ids_reflect_every_change(self, backend: Backend) -> None:
        for cid in ("a1", "b2", "c3"):
            backend.publish(card(cid))
        backend.publish(card("b2", active=False))
        backend.remove("acme", "c3")
        assert backend.card_ids("acme") == {"a1", "b2"}

    def test_orgs_are_separate(self, backend: Backend) -> None:
        backend.publish(card("shared1", org="acme"))
        backend.publish(card("shared1", org="globex", person=person("Hank Scorpio")))
        backend.remove("acme", "shared1")
        assert backend.card_ids("acme") == set()
        assert backend.card_ids("globex") == {"shared1"}
        shown = self.inspect(backend, "globex", "shared1")
        assert shown is not None and "Hank Scorpio" in shown.text

    # fingerprint

    def test_fingerprint_is_short_and_stable_across_instances(
        self, make_backend: MakeBackend
    ) -> None:
        first = make_backend(self.orgs).fingerprint("acme")
        assert isinstance(first, str) and 0 < len(first) <= 64
        assert make_backend(self.orgs).fingerprint("acme") == first

    def test_fingerprint_changes_with_the_template(self, make_backend: MakeBackend) -> None:
        other = [replace(org, template=self.OTHER_TEMPLATE) for org in self.orgs]
        assert make_backend(other).fingerprint("acme") != make_backend(self.orgs).fingerprint(
            "acme"
        )

    # finish and close

    def test_finish_accepts_the_orgs_cards(self, backend: Backend) -> None:
        backend.publish(card("a1", person=person("Ada Lovelace")))
        backend.publish(card("b2", person=person("Grace Hopper")))
        backend.finish("acme", [("a1", "Ada Lovelace"), ("b2", "Grace Hopper")])
        backend.finish("acme", [("a1", "Ada Lovelace"), ("b2", "Grace Hopper")])
        backend.finish("globex", [])
        assert backend.card_ids("acme") == {"a1", "b2"}

    # flush and parallel publishing (optional: see the Backend docstring)

    def test_flush_keeps_what_was_published_and_removed(self, make_backend: MakeBackend) -> None:
        backend = make_backend(self.orgs)
        if not hasattr(backend, "flush"):
            pytest.skip("no flush(): publish and remove are durable when they return")
        backend.flush()  # nothing to flush yet
        backend.publish(card("a1"))
        backend.publish(card("b2"))
        backend.remove("acme", "a1")
        backend.flush()
        backend.flush()
        later = make_backend(self.orgs)
        assert later.card_ids("acme") == {"b2"}
        shown = self.inspect(later, "acme", "b2")
        assert shown is not None and "Ada Lovelace" in shown.text
        backend.close()

    def test_parallel_safe_instances_publish_side_by_side(self, make_backend: MakeBackend) -> None:
        first = make_backend(self.orgs)
        if getattr(type(first), "parallel_safe", False) is not True:
            pytest.skip("not parallel-safe: cardsync publishes from one process")
        second = make_backend(self.orgs)
        ids = [f"p{i:02d}" for i in range(24)]

        def publish(backend: Backend, mine: list[str]) -> None:
            for cid in mine:
                backend.publish(card(cid, person=person(title=f"Title {cid}")))
            backend.flush()  # type: ignore[attr-defined]

        with ThreadPoolExecutor(2) as pool:
            done = [pool.submit(publish, first, ids[0::2]), pool.submit(publish, second, ids[1::2])]
            for future in done:
                future.result()
        later = make_backend(self.orgs)
        assert later.card_ids("acme") == set(ids)
        for cid in ids:
            shown = self.inspect(later, "acme", cid)
            assert shown is not None and f"Title {cid}" in shown.text
        first.close()
        second.close()

    def test_close_keeps_what_was_published(self, make_backend: MakeBackend) -> None:
        backend = make_backend(self.orgs)
        url = backend.publish(card()).url
        backend.finish("acme", [("c0ffee01", "Ada Lovelace")])
        backend.close()
        later = make_backend(self.orgs)
        assert later.card_ids("acme") == {"c0ffee01"}
        assert later.url("acme", "c0ffee01") == url
