"""Big plans and their application: plans made in chunks and spilled to disk, applied in
batches with one flush and one ledger transaction each, published by worker processes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from cardsync import planner, plans, service
from cardsync.apply import Applier, _batches
from cardsync.backends.memory import MemoryBackend
from cardsync.errors import BackendError
from cardsync.models import Card, DirectoryUser, OrgProfile, Person
from cardsync.planner import (
    CreateCard,
    DeleteCard,
    DeleteUser,
    PlanContext,
    UpdateCard,
    card_id_for,
)
from cardsync.state import State, open_state
from cardsync.sync import Reporter, Syncer
from cardsync.workers import Outcome, worker_count
from e2e_support import Graph, start_graph

KEY = b"k" * 32


def create(uid: str, org: str = "acme", member: bool = True) -> CreateCard:
    card = Card(org, card_id_for(KEY, uid), uid, Person(display_name=f"User {uid}"))
    return CreateCard(org, uid, f"{uid}@acme.test", "new user in Entra ID", card,
                      new_member=f"{uid}@acme.test" if member else None)


def update(uid: str) -> UpdateCard:
    action = create(uid)
    return UpdateCard("acme", uid, action.user_principal_name, "profile changed: job_title",
                      action.card, ("job_title",))


def delete(uid: str) -> DeleteCard:
    return DeleteCard("acme", uid, f"{uid}@acme.test", "gone", card_id_for(KEY, uid))


# -- Plan ---------------------------------------------------------------------------


def test_a_spilled_plan_reads_back_in_plan_order() -> None:
    ctx = PlanContext(source="acme", card_key=KEY, fingerprints={})
    actions = [create("c1"), delete("d1"), update("u1"), create("c2"), delete("d2"),
               update("u2"), create("c3"), delete("d3"), create("c4")]
    with plans.Plan(ctx, in_memory=2) as plan:
        for action in actions:
            plan.add(action)
        assert plan.spilled
        assert list(plan) == sorted(actions, key=lambda a: a.order)
        assert list(plan) == list(plan)  # can be read more than once
        assert (len(plan), plan.destructive, plan.counts["create_card"]) == (9, 3, 4)


def test_seat_limits_hold_across_a_spilled_plan() -> None:
    ctx = PlanContext(source="acme", card_key=KEY, fingerprints={}, seats={"acme": 3},
                      seats_used={"acme": 2})
    freeing = DeleteUser("acme", "gone", "gone@acme.test", "deleted", "gone@acme.test", None)
    actions = [create("c1"), create("c2"), freeing, create("c3"), create("c4", member=False)]
    with plans.Plan(ctx, in_memory=2) as plan:
        for action in actions:
            plan.add(action)
        expected = list(planner.within_seats(
            ctx, sorted(actions, key=lambda a: a.order), planner.freed_seats(actions)))
        assert list(plan) == expected
        # 2 free seats (3 - 2 + 1 freed): c1 and c2 take them, c3 waits, c4 needs none
        assert [a.kind for a in plan] == ["delete_user", "create_card", "create_card",
                                         "create_card", "wait"]
        assert plan.applied() == 4


def seeded_state(tmp_path: Path) -> State:
    """Users, members (by id and by mail, in two orgs) and a card another org made."""
    state = open_state(tmp_path / "state.db")
    users = [DirectoryUser(f"u{i}", Person(display_name=f"User {i}", mail=f"u{i}@acme.test"))
             for i in range(9)]
    with state.transaction():
        state.ingest("acme", users)
        state.add_member("acme", "u1@acme.test", None, "invited")  # linked by mail
        state.add_member("acme", "u2@acme.test", "u2", "entra")  # has a seat, no card
        state.add_member("beta", "u3@acme.test", None, "invited")
        state.add_member("acme", "u4@acme.test", None, "invited")
        state.suppress_card("acme", "u4@acme.test", True)
        state.record_card("beta", "u5", card_id_for(KEY, "u5"), "x", users[5].person, "fp",
                          True, {}, source="beta")
    return state


def test_plans_made_in_chunks_equal_one_plan_with_every_member(tmp_path: Path) -> None:
    state = seeded_state(tmp_path)
    base = PlanContext(source="acme", card_key=KEY, fingerprints={"acme": "fp"},
                       routes={"acme.test": "acme"})
    members = state.members()
    whole = dataclasses.replace(
        base,
        members_by_user={(m.org, m.user_id): m for m in members if m.user_id},
        members_by_email={(m.org, m.email): m for m in members},
        other_cards=state.other_cards("acme"),
    )
    rows = list(state.plan_rows("acme", {"acme": "fp"}))
    expected = planner.plan(whole, rows)
    assert {a.reason for a in expected} >= {"user has no card yet"}  # the seeds matter
    with plans.make(state, base, iter(rows), chunk=2) as plan:
        assert list(plan) == expected
    state.close()


# -- Applier ------------------------------------------------------------------------


class FlushingBackend(MemoryBackend):
    """Records how many ledger rows existed at each flush."""

    def __init__(self, state: State, fail: bool = False) -> None:
        super().__init__({}, [OrgProfile("acme", "Acme")])
        self.state, self.fail = state, fail
        self.ledger_at_flush: list[int] = []

    def flush(self) -> None:
        super().flush()
        self.ledger_at_flush.append(len(list(self.state.cards("acme"))))
        if self.fail:
            raise BackendError("disk full")


def test_each_batch_is_flushed_before_its_ledger_rows(tmp_path: Path) -> None:
    state = open_state(tmp_path / "state.db")
    backend = FlushingBackend(state)
    actions = [create(f"c{i}") for i in range(5)]
    report = Applier(backend, state, "acme", {"acme": "fp"}, batch=2).run(actions)
    assert report.done["create_card"] == 5 and not report.failures
    assert backend.ledger_at_flush == [0, 2, 4]  # then each batch's rows, in one transaction
    assert len(list(state.cards("acme"))) == 5
    state.close()


def test_a_failed_flush_leaves_the_batch_to_the_next_run(tmp_path: Path) -> None:
    state = open_state(tmp_path / "state.db")
    backend = FlushingBackend(state, fail=True)
    steps: list[tuple[str, bool]] = []
    report = Applier(backend, state, "acme", {"acme": "fp"}, batch=2).run(
        [create("c1"), create("c2"), create("c3")], lambda a, ok: steps.append((a.user_id, ok))
    )
    assert not report.done
    assert [(r.user_id, "disk full" in m) for r, m in report.failures] == [
        ("c1", True), ("c2", True), ("c3", True)]
    assert steps == [("c1", False), ("c2", False), ("c3", False)]
    assert list(state.cards("acme")) == []
    state.close()


class DyingPool:
    """A pool whose worker dies during the first batch."""

    workers = 1

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, cards: list[Card]) -> Future[list[Outcome]]:
        self.submitted += 1
        if self.submitted > 1:
            raise BrokenProcessPool("a child process terminated abruptly")
        future: Future[list[Outcome]] = Future()
        future.set_exception(BrokenProcessPool("a child process terminated abruptly"))
        return future


def test_a_dead_worker_leaves_its_batch_to_the_next_run_and_the_rest_to_this_one(
    tmp_path: Path,
) -> None:
    state = open_state(tmp_path / "state.db")
    backend = MemoryBackend({}, [OrgProfile("acme", "Acme")])
    pool = DyingPool()
    actions = [create(f"c{i}") for i in range(6)]
    report = Applier(backend, state, "acme", {"acme": "fp"}, pool=pool, batch=2).run(
        actions)  # type: ignore[arg-type]
    failed = [(r.user_id, "worker failed" in m) for r, m in report.failures]
    assert failed == [("c0", True), ("c1", True)]  # what the dead worker had
    assert report.done["create_card"] == 4  # published here, once the pool was broken
    assert {c.user_id for c in state.cards("acme")} == {"c2", "c3", "c4", "c5"}
    state.close()


def test_batches_never_mix_order_classes() -> None:
    actions = [delete("d1"), delete("d2"), delete("d3"), update("u1"), create("c1"),
               create("c2"), create("c3")]
    batches = [[a.user_id for a in batch] for batch in _batches(actions, 2)]
    assert batches == [["d1", "d2"], ["d3"], ["u1"], ["c1", "c2"], ["c3"]]


# -- worker processes ---------------------------------------------------------------


def test_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARDSYNC_WORKERS", "3")
    assert (worker_count(1), worker_count(0)) == (3, 0)
    monkeypatch.setenv("CARDSYNC_WORKERS", "1")
    assert worker_count(10_000) == 0
    monkeypatch.setenv("CARDSYNC_WORKERS", "many")
    assert worker_count(10_000) == 0
    monkeypatch.delenv("CARDSYNC_WORKERS")
    assert worker_count(10) == 0  # too few cards to be worth starting workers


class Events(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def event(self, org: str, message: str) -> None:
        self.lines.append(message)


@pytest.fixture
def graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Graph]:
    yield from start_graph(tmp_path, monkeypatch, page_size=50)


def test_worker_processes_publish_what_one_process_would(
    graph: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = graph.add_sample(60)
    monkeypatch.setenv("CARDSYNC_WORKERS", "2")
    events = Events()
    [outcome] = service.run(graph.config(), reporter=events)
    assert outcome.result == "success", outcome.error
    assert outcome.counts()["create_card"] == 60
    assert any("2 worker processes" in line for line in events.lines)
    cards = service.list_cards(graph.config())
    assert sorted(c["user_id"] for c in cards) == sorted(ids)
    org_dir = graph.dir / "site" / "contoso"
    assert {p.name for p in org_dir.iterdir() if p.is_dir()} == {c["card_id"] for c in cards}
    for c in cards:
        assert all(Path(path).is_file() for path in c["files"].values())
    assert not [p for p in org_dir.rglob("*") if ".tmp" in p.name]
    # The same cycle in one process has nothing left to do.
    monkeypatch.setenv("CARDSYNC_WORKERS", "0")
    [again] = service.run(graph.config(), dry_run=True)
    assert again.actions == []


def test_the_index_is_rewritten_only_when_a_name_can_change(graph: Graph) -> None:
    """At 100,000 cards the organization's index is a 15 MB page: an incremental cycle
    that changes no name (nor the set of cards) leaves it alone."""
    ids = graph.add_sample(4)
    text = graph.config_path.read_text().replace(
        'type = "local"\noutput = "site"\nbase_url = "https://cards.example.test/people"',
        'type = "memory"',
    )
    graph.config_path.write_text(text)
    config = graph.config()
    state = open_state(config.state.path)
    backend = service.make_backend(config)
    assert isinstance(backend, MemoryBackend)
    sync = Syncer(config, state, backend, service.graph_source)
    try:
        sync.cycle()
        assert [c[0] for c in backend.calls].count("finish") == 1
        graph.tenant.update_user(ids[0], jobTitle="Chief Index Officer")
        [outcome] = sync.cycle()
        assert outcome.counts()["update_card"] == 1
        assert [c[0] for c in backend.calls].count("finish") == 1
        graph.tenant.update_user(ids[1], displayName="Renamed Person")
        sync.cycle()
        assert [c[0] for c in backend.calls].count("finish") == 2
        assert any(name == "Renamed Person" for _, name in backend.indexes["contoso"])
    finally:
        sync.close()
        state.close()
