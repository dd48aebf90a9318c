"""The backend contract, run against each built-in backend, and the registry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from backend_contract import FAILING_USER, BackendContract, MakeBackend, Shown, card
from cardsync.backends import Backend, create, load_class
from cardsync.backends.local import LocalBackend
from cardsync.backends.memory import MemoryBackend
from cardsync.errors import BackendError, ConfigError
from cardsync.models import Card, OrgProfile

BASE_URL = "https://cards.example.org/people"


class TestMemoryBackend(BackendContract):
    @pytest.fixture
    def make_backend(self) -> MakeBackend:
        store: dict[tuple[str, str], Card] = {}

        def make(orgs: Sequence[OrgProfile]) -> Backend:
            return MemoryBackend({"base_url": BASE_URL}, list(orgs), cards=store)

        return make

    @pytest.fixture
    def broken_backend(self) -> Backend:
        return MemoryBackend({"fail_user_ids": [FAILING_USER]}, self.orgs)

    def inspect(self, backend: Backend, org: str, card_id: str) -> Shown | None:
        assert isinstance(backend, MemoryBackend)
        found = backend.cards.get((org, card_id))
        if found is None:
            return None
        # An inactive card stays but shows nothing beyond the name.
        person = found.person
        fields = [person.name, person.job_title, person.mail] if found.active else [person.name]
        return Shown(" ".join(fields), found.active, found.active)


class TestLocalBackend(BackendContract):
    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> MakeBackend:
        def make(orgs: Sequence[OrgProfile]) -> Backend:
            return LocalBackend(
                {"output": str(tmp_path / "site"), "base_url": BASE_URL}, list(orgs)
            )

        return make

    @pytest.fixture
    def broken_backend(self, tmp_path: Path) -> Backend:
        # A file where the output folder should be: every write fails.
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")
        return LocalBackend({"output": str(blocker), "base_url": BASE_URL}, self.orgs)

    def inspect(self, backend: Backend, org: str, card_id: str) -> Shown | None:
        assert isinstance(backend, LocalBackend)
        folder = backend.options.output / org / card_id
        page = folder / "index.html"
        if not page.exists():
            return None
        html = page.read_text("utf-8")
        contact = any((folder / name).exists() for name in ("card.vcf", "qr.svg", "qr.png"))
        return Shown(html, "no longer active" not in html, contact)


class TestMemoryBackendExtras:
    """What tests elsewhere rely on: the call log and failure injection."""

    ORGS = [OrgProfile("acme", "Acme Inc.")]

    def test_calls_are_logged_in_order(self) -> None:
        backend = MemoryBackend({}, self.ORGS)
        backend.publish(card("a1"))
        backend.remove("acme", "b2")
        backend.finish("acme", [("a1", "Ada Lovelace")])
        backend.close()
        assert backend.calls == [
            ("publish", "acme", "a1"),
            ("remove", "acme", "b2"),
            ("finish", "acme", "a1"),
            ("close",),
        ]
        assert backend.indexes == {"acme": [("a1", "Ada Lovelace")]}

    def test_fail_user_ids_fail_only_those_users(self) -> None:
        backend = MemoryBackend({"fail_user_ids": ["user-bad1"]}, self.ORGS)
        with pytest.raises(BackendError):
            backend.publish(card("bad1"))
        backend.publish(card("good1"))
        assert backend.card_ids("acme") == {"good1"}
        assert [call[0] for call in backend.calls] == ["publish", "publish"]

    def test_published_returns_cards_by_id(self) -> None:
        backend = MemoryBackend({}, self.ORGS)
        backend.publish(card("a1"))
        assert backend.published("acme") == {"a1": card("a1")}

    def test_default_url(self) -> None:
        assert MemoryBackend({}, self.ORGS).url("acme", "a1") == "memory://cards/acme/a1/"

    def test_fingerprint_changes_with_the_base_url(self) -> None:
        one = MemoryBackend({"base_url": "https://a.example"}, self.ORGS).fingerprint("acme")
        two = MemoryBackend({"base_url": "https://b.example"}, self.ORGS).fingerprint("acme")
        assert one != two

    def test_use_after_close_is_a_bug(self) -> None:
        backend = MemoryBackend({}, self.ORGS)
        backend.close()
        with pytest.raises(RuntimeError):
            backend.publish(card())

    def test_bad_options_are_reported(self) -> None:
        with pytest.raises(ConfigError) as caught:
            MemoryBackend({"fail_user_ids": "u1", "colour": "red"}, self.ORGS)
        assert caught.value.problems == [
            "backend.colour: unknown option",
            "backend.fail_user_ids: must be a list of user ids",
        ]


class TestRegistry:
    def test_builtins_load_lazily_by_name(self) -> None:
        assert load_class("local") is LocalBackend
        assert load_class("memory") is MemoryBackend

    def test_create_builds_a_backend_that_satisfies_the_protocol(self, tmp_path: Path) -> None:
        orgs = [OrgProfile("acme", "Acme Inc.")]
        local = create("local", {"output": str(tmp_path), "base_url": BASE_URL}, orgs)
        assert isinstance(local, Backend)
        assert isinstance(create("memory", {}, orgs), Backend)
