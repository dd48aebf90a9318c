"""End to end: the real msgraph-sdk and azure-identity clients against the project's
Graph emulator over HTTPS, the real SQLite state and the local card site."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cardsync import service
from cardsync.state import open_state
from cardsync.sync import describe
from e2e_support import Graph, start_graph


@pytest.fixture
def graph(tmp_path, monkeypatch):
    yield from start_graph(tmp_path, monkeypatch, page_size=5)


def ledger(graph: Graph) -> dict[str, dict]:
    with sqlite3.connect(graph.dir / "state.db") as db:
        db.row_factory = sqlite3.Row
        return {r["user_id"]: dict(r) for r in db.execute("SELECT * FROM cards")}


def card_dirs(graph: Graph) -> set[str]:
    org_dir = graph.dir / "site" / graph.slug
    return {p.name for p in org_dir.iterdir() if p.is_dir()} if org_dir.exists() else set()


def test_initial_sync_publishes_one_card_per_user(graph):
    ids = graph.add_sample(12)
    [outcome] = service.run(graph.config())
    assert outcome.result == "success" and outcome.mode == "initial"
    assert outcome.counts()["create_card"] == 12
    cards = ledger(graph)
    assert set(cards) == set(ids)
    assert card_dirs(graph) == {c["card_id"] for c in cards.values()}
    some = next(iter(cards.values()))
    page = (graph.dir / "site" / graph.slug / some["card_id"] / "index.html").read_text()
    assert json.loads(some["person"])["display_name"] in page.replace("&#39;", "'")
    assert some["url"] == f"https://cards.example.test/people/{graph.slug}/{some['card_id']}/"
    # 12 users in pages of 5: 3 delta pages, the $select on the first request only
    deltas = graph.graph_requests("/users/delta")
    assert len(deltas) == 3
    assert "select" in deltas[0].query.lower()
    assert all("select" not in r.query.lower() for r in deltas[1:])
    status = service.status(graph.config())["organizations"][0]
    assert (status["users"], status["cards"], status["last_result"]) == (12, 12, "success")


def test_incremental_sync_applies_only_the_changes(graph):
    ids = graph.add_sample(8)
    config = graph.config()
    service.run(config)
    before = ledger(graph)
    graph.emu.clear_requests()

    graph.tenant.update_user(ids[0], jobTitle="Chief Everything Officer")
    new = graph.tenant.add_user(displayName="Nova Newhire", userPrincipalName="nova@contoso.com",
                                mail="nova@contoso.com", accountEnabled=True)
    graph.tenant.hard_delete(ids[1])
    graph.tenant.soft_delete(ids[2])
    graph.tenant.update_user(ids[3], accountEnabled=False)
    graph.emu.faults.duplicate_entries = True

    [outcome] = service.run(config)
    assert outcome.result == "success" and outcome.mode == "incremental"
    kinds = sorted((a.kind, a.user_id) for a in outcome.actions)
    assert kinds == sorted([("update_card", ids[0]), ("create_card", new),
                            ("delete_user", ids[1])])
    after = ledger(graph)
    assert set(after) == (set(before) - {ids[1]}) | {new}
    assert before[ids[1]]["card_id"] not in card_dirs(graph)  # files gone
    assert ids[2] in after and ids[3] in after  # soft-deleted and disabled keep their card
    page = Path(json.loads(after[ids[0]]["files"])["html"]).read_text()
    assert "Chief Everything Officer" in page
    # the permanently deleted user left the mirror too; the soft-deleted one is remembered
    state = open_state(config.state.path)
    assert state.mirror_user(graph.slug, ids[1]) is None
    assert state.mirror_user(graph.slug, ids[2]).removed == "changed"
    state.close()


def test_nothing_changed_costs_one_graph_request_and_rewrites_nothing(graph):
    graph.add_sample(7)
    config = graph.config()
    service.run(config)
    site = graph.dir / "site"
    snapshot = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in site.rglob("*") if p.is_file()}
    graph.emu.clear_requests()
    [outcome] = service.run(config)
    assert outcome.actions == []
    assert [r.path for r in graph.graph_requests()] == ["/v1.0/users/delta"]
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in site.rglob("*") if p.is_file()}
    assert after == snapshot


def test_throttling_loses_nothing(graph):
    ids = graph.add_sample(40)
    graph.emu.faults.throttle(probability=0.3, status=429, retry_after=0, seed=3)
    [outcome] = service.run(graph.config())
    assert outcome.result == "success"
    assert set(ledger(graph)) == set(ids)
    statuses = [r.status for r in graph.graph_requests("/users/delta")]
    assert statuses.count(429) >= 2  # throttled, and retried until every page arrived


def test_service_unavailable_is_retried(graph):
    ids = graph.add_sample(6)
    graph.emu.faults.fail_next(n=3, status=503, retry_after=0, path_contains="/users/delta")
    [outcome] = service.run(graph.config())
    assert outcome.result == "success"
    assert set(ledger(graph)) == set(ids)


@pytest.mark.parametrize("mode", ["410", "syncStateNotFound", "resyncRequired"])
def test_expired_delta_link_runs_full_sync_and_sweeps(graph, mode):
    ids = graph.add_sample(9)
    config = graph.config()
    service.run(config)
    first = ledger(graph)
    graph.tenant.hard_delete(ids[0])
    graph.tenant.soft_delete(ids[1])
    graph.tenant.update_user(ids[2], department="Moved")
    graph.emu.faults.expire_delta_links(mode=mode)

    [outcome] = service.run(config)
    assert outcome.result == "success" and outcome.mode == "resync"
    after = ledger(graph)
    assert set(after) == set(ids) - {ids[0]}
    # no duplicates: same card ids as before, one folder per card
    assert {uid: c["card_id"] for uid, c in after.items()} == {
        uid: c["card_id"] for uid, c in first.items() if uid != ids[0]
    }
    assert card_dirs(graph) == {c["card_id"] for c in after.values()}
    # deleted items told the soft delete from the permanent one
    assert any("/directory/deletedItems/" in r.path for r in graph.emu.requests)
    state = open_state(config.state.path)
    assert state.mirror_user(graph.slug, ids[1]).removed == "changed"
    state.close()
    # and the next round is incremental again
    [third] = service.run(config)
    assert third.mode == "incremental" and third.actions == []


def test_hostile_names_are_escaped_on_the_site(graph):
    uid = graph.tenant.add_user(
        displayName='<script>alert("x")</script> Ünïcødé 王小明',
        userPrincipalName="evil@contoso.com", mail="evil@contoso.com",
        jobTitle="Eve\r\nTEL:+1666", accountEnabled=True,
    )
    service.run(graph.config())
    card = ledger(graph)[uid]
    files = json.loads(card["files"])
    html = Path(files["html"]).read_text()
    assert "<script>alert" not in html
    assert "&lt;script&gt;" in html and "王小明" in html
    vcard = Path(files["vcard"]).read_text()
    assert vcard.count("\nTEL") == 0 or "TEL:+1666" not in vcard.replace("\\n", "")
    assert Path(files["html"]).parent.name == card["card_id"]


def test_partial_failure_is_retried_next_run(graph, tmp_path):
    ids = graph.add_sample(4)
    graph.write_config(extra="")
    text = graph.config_path.read_text().replace(
        'type = "local"\noutput = "site"\nbase_url = "https://cards.example.test/people"',
        f'type = "memory"\nfail_user_ids = ["{ids[0]}"]',
    )
    graph.config_path.write_text(text)
    [outcome] = service.run(graph.config())
    assert outcome.result == "partial"
    assert [a.user_id for a, _ in outcome.report.failures] == [ids[0]]
    assert set(ledger(graph)) == set(ids[1:])
    [again] = service.run(graph.config())
    assert [a.user_id for a in again.actions] == [ids[0]]  # planned again, still failing


def test_a_big_run_reports_every_action_from_disk(graph, monkeypatch):
    # Past SPILL_AT records a run's report lives in a temporary file: every action is
    # still reported, in order, for a run and for a dry run (whose actions carry cards).
    monkeypatch.setattr("cardsync.actionlog.SPILL_AT", 3)
    ids = graph.add_sample(8)
    config = graph.config()
    [dry] = service.run(config, dry_run=True)
    assert len(dry.actions._head) == 3 and len(dry.actions) == 8
    assert {a.card.user_id for a in dry.actions} == set(ids)
    [outcome] = service.run(config)
    assert outcome.result == "success" and len(outcome.actions._head) == 3
    assert sorted(a.user_id for a in outcome.actions) == sorted(ids)
    assert outcome.counts()["create_card"] == 8
    assert [describe(a)["action"] for a in outcome.actions] == ["create_card"] * 8
