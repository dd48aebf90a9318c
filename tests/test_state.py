"""The SQLite state on real files: migrations, mirror merging, ledger, runs, lock."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardsync.errors import LockedError, StateError
from cardsync.graph.parse import parse_delta_page_raw
from cardsync.models import CARD_FIELDS, DirectoryUser, GraphUser, Person, Removal
from cardsync.state import content_hash, lock_for, open_state, person_to_json


def du(uid: str, name: str = "Ada", enabled: bool = True) -> DirectoryUser:
    return DirectoryUser(uid, Person(display_name=name, user_principal_name=f"{uid}@x.test"),
                         enabled)


@pytest.fixture
def state(tmp_path):
    s = open_state(tmp_path / "state.db")
    yield s
    s.close()


def test_migrations_are_recorded_and_idempotent(tmp_path):
    path = tmp_path / "state.db"
    first = open_state(path)
    key = first.card_key()
    first.close()
    again = open_state(path)
    assert again.card_key() == key
    names = [r[0] for r in again.db.execute("SELECT name FROM _sqlite_migrations")]
    assert names == [
        "001_initial", "002_photos", "003_lifecycle", "004_card_user_index", "005_plan_indexes"
    ]
    again.close()


def test_last_entry_for_an_id_wins_within_a_page(state):
    with state.transaction():
        state.ingest("o", [du("a", "Old"), du("a", "New"), du("b")])
    assert state.mirror_user("o", "a").person.display_name == "New"
    assert state.counts("o")["users"] == 2


def test_removal_then_readd_in_one_page(state):
    with state.transaction():
        state.ingest("o", [du("a")])
        state.ingest("o", [Removal("a", "changed"), du("a", "Back")])
    row = state.mirror_user("o", "a")
    assert row.removed is None and row.person.display_name == "Back"
    with state.transaction():
        state.ingest("o", [du("a", "X"), Removal("a", "deleted")])
    assert state.mirror_user("o", "a").removed == "deleted"


def test_rollback_leaves_nothing(state):
    state.db.begin()
    state.ingest("o", [du("a")])
    state.save_delta_link("o", "https://link")
    state.db.rollback()
    assert state.mirror_user("o", "a") is None
    assert state.delta_link("o") is None


def test_full_round_sweep_finds_unseen_users(state):
    with state.transaction():
        state.ingest("o", [du("a"), du("b"), du("c")], round_id="r1")
    with state.transaction():
        state.ingest("o", [du("a"), du("c")], round_id="r2")
    assert state.unseen_in_round("o", "r2") == ["b"]


def test_ledger_roundtrip_and_index(state):
    p = Person(display_name="Zoë", user_principal_name="z@x.test")
    with state.transaction():
        state.record_card("o", "u1", "cid1", "https://x/o/cid1/", p, "fp", True, {"html": "/a"})
        state.record_card("o", "u2", "cid2", "https://x/o/cid2/", Person(display_name="Al"),
                          "fp", True, {})
    cards = list(state.cards("o"))
    assert [c.card_id for c in cards] == ["cid2", "cid1"]
    assert cards[1].person == p and cards[1].files == {"html": "/a"}
    assert state.card_index("o") == [("cid2", "Al"), ("cid1", "Zoë")]


def test_runs_log(state):
    run = state.start_run("o", "run")
    assert state.last_run("o") is None  # unfinished runs are not "last sync"
    state.finish_run(run, "partial", {"create_card": 2, "failed": 1}, "boom")
    last = state.last_run("o")
    assert (last.result, last.counts, last.error) == ("partial", {"create_card": 2, "failed": 1},
                                                       "boom")
    assert last.finished_at.endswith("+00:00")


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError) as info:
        open_state(path)
    assert "not a usable cardsync database" in info.value.message
    assert info.value.hint


def test_second_lock_holder_is_refused(tmp_path):
    lock = lock_for(tmp_path / "state.db")
    lock.acquire()
    code = (
        "import sys; from pathlib import Path; from cardsync.state import lock_for\n"
        "from cardsync.errors import LockedError\n"
        f"try:\n  lock_for(Path({str(tmp_path / 'state.db')!r})).acquire()\n"
        "except LockedError as e:\n  print(e.message); sys.exit(7)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 7, proc.stderr
    assert "another cardsync run is in progress" in proc.stdout
    lock.release()
    second = lock_for(tmp_path / "state.db")
    second.acquire()  # free again once released
    second.release()


def test_lock_in_same_process_is_refused_too(tmp_path):
    first = lock_for(tmp_path / "s.db")
    first.acquire()
    with pytest.raises(LockedError):
        lock_for(tmp_path / "s.db").acquire()
    first.release()


def test_state_is_plain_sqlite(tmp_path, state):
    with state.transaction():
        state.ingest("o", [du("a")])
    rows = sqlite3.connect(state.path).execute("SELECT org, id FROM users").fetchall()
    assert rows == [("o", "a")]


def test_new_state_files_get_16k_pages_and_old_ones_keep_theirs(tmp_path):
    new = open_state(tmp_path / "new.db")
    assert new.db.execute("PRAGMA page_size").fetchone()[0] == 16384
    new.close()
    # A state file made before (SQLite's 4 KiB default) opens, migrates and keeps its
    # page size: changing it would need a VACUUM out of WAL mode.
    old_path = tmp_path / "old.db"
    old = sqlite3.connect(old_path)
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE unrelated (x)")
    old.commit()
    old.close()
    reopened = open_state(old_path)
    assert reopened.db.execute("PRAGMA page_size").fetchone()[0] == 4096
    with reopened.transaction():
        reopened.ingest("o", [du("a")])
    assert reopened.db.execute("SELECT id FROM users").fetchall() == [("a",)]
    reopened.close()


def test_the_documented_page_size_conversion_works(tmp_path, monkeypatch):
    # docs/operations.md tells admins how to move an old state file to 16 KiB pages.
    docs = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    command = next(line for line in docs.splitlines() if line.startswith("sqlite3 state.db"))
    statements = command.split('"')[1].split(";")
    path = tmp_path / "state.db"
    monkeypatch.setattr("cardsync.state.PAGE_SIZE", 4096)
    old = open_state(path)
    with old.transaction():
        old.ingest("o", [du("a"), du("b")])
    old.close()
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in filter(str.strip, statements):
        conn.execute(statement)
    conn.close()
    monkeypatch.undo()
    converted = open_state(path)
    assert converted.db.execute("PRAGMA page_size").fetchone()[0] == 16384
    assert converted.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r[0] for r in converted.db.execute("SELECT id FROM users ORDER BY id")] == ["a", "b"]
    converted.close()


def test_opening_the_state_imports_neither_pandas_nor_numpy(tmp_path):
    # sqlite-utils imports both at import time when installed; cardsync uses neither, and
    # pandas alone would cost `cardsync status` its start-up budget. Stand-ins for both
    # are installed here so that the test means the same whether they are installed or not.
    site = tmp_path / "site"
    for name in ("numpy", "pandas"):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("")
    code = (
        "import pathlib, sys\n"
        "from cardsync.state import open_state\n"
        "open_state(pathlib.Path(sys.argv[1])).close()\n"
        "print('numpy' in sys.modules, 'pandas' in sys.modules)\n"
        "import numpy, pandas\n"  # still importable afterwards
        "print(numpy.__file__.startswith(sys.argv[2]), pandas.__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.db"), str(site)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True", "pandas"]


def test_planning_query_uses_indexes(state):
    """At tenant scale a table scan per user is quadratic: every join must use an index."""
    rows = state.plan_rows("o", {"o": "fp"}, routes={"x.test": "p"})
    list(rows)
    sql_plan = state.db.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM users u LEFT JOIN cards c "
        "ON c.user_id = u.id AND c.source = u.org WHERE u.org = 'o'"
    ).fetchall()
    details = " ".join(str(r[-1]) for r in sql_plan)
    assert "SCAN c" not in details and "cards_user_source" in details


@given(
    st.builds(
        Person,
        display_name=st.text(max_size=6),
        given_name=st.text(max_size=6),
        mail=st.text(max_size=6),
        business_phones=st.lists(st.text(max_size=6), max_size=3).map(tuple),
        country=st.text(max_size=6),
    )
)
def test_person_json_is_canonical(person):
    """Content hashes are taken over this text: it must never change for a person."""
    data = {}
    for attr in CARD_FIELDS.values():
        value = getattr(person, attr)
        if value:
            data[attr] = list(value) if isinstance(value, tuple) else value
    assert person_to_json(person) == json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    assert tuple(Person.__dataclass_fields__) == tuple(CARD_FIELDS.values())


def gu(uid: str, name: str = "Ada", enabled: bool = True) -> GraphUser:
    """A user as the Graph reader keeps it: Graph's JSON text of the object."""
    body = json.dumps({"@odata.deltaLink": "https://g/v1.0/users/delta?$deltatoken=x", "value": [
        {"id": uid, "displayName": name, "userPrincipalName": f"{name.lower()}@x.test",
         "accountEnabled": enabled},
    ]}).encode()
    (user,) = parse_delta_page_raw(body)[0].entries
    assert isinstance(user, GraphUser)
    return user


ID = "{:08d}-0000-4000-8000-000000000000".format


def test_graph_users_are_stored_as_graph_sent_them(state):
    user = gu(ID(1), "Grace")
    with state.transaction():
        assert state.ingest("o", [user]) == (1, 0)
    row = state.db.execute("SELECT person, hash, upn, display_name FROM users").fetchone()
    assert row == (user.text, user.hash, "grace@x.test", "Grace")
    mirrored = state.mirror_user("o", ID(1))
    assert mirrored.person == user.person and mirrored.person.display_name == "Grace"
    assert mirrored.hash == user.hash


def test_big_ingests_are_written_in_statements_of_many_rows(state, monkeypatch):
    # Rows go out in multi-row statements; the last entry for an id still wins across
    # statement boundaries, removals in between apply in order, and the counts add up.
    monkeypatch.setattr("cardsync.state.UPSERT_ROWS", 3)
    statements = []
    state.db.conn.set_trace_callback(statements.append)
    entries = [gu(ID(i), f"U{i}") for i in range(7)]
    entries += [gu(ID(1), "Renamed"), Removal(ID(6), "deleted"), gu(ID(8), "Last")]
    with state.transaction():
        assert state.ingest("o", entries) == (9, 1)
    state.db.conn.set_trace_callback(None)
    inserts = [s for s in statements if s.startswith("INSERT INTO users")]
    # 0-2 | 3-5 | 6 and 1 (written before 6's removal) | 8
    assert [s.count("), (") + 1 for s in inserts] == [3, 3, 2, 1]
    assert state.mirror_user("o", ID(1)).person.display_name == "Renamed"
    assert state.mirror_user("o", ID(6)).removed == "deleted"
    assert state.counts("o")["users"] == 7  # 8 ids, one removed


def _steady_index(state) -> bool:
    return state.db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'users_steady'"
    ).fetchone() is not None


def test_a_first_round_builds_the_planning_index_once_at_the_end(state):
    with state.first_round("o"):
        assert not _steady_index(state)  # no random index inserts while storing
        with state.transaction():
            state.ingest("o", [gu(ID(1))])
    assert _steady_index(state)
    with state.first_round("o"):  # the mirror has rows: the index stays
        assert _steady_index(state)
    assert _steady_index(state)


def test_a_first_round_is_checkpointed_while_its_index_is_built(state):
    # With WAL auto-checkpoints off for the round, only the checkpoint that runs beside
    # building the planning index can have copied the round into the database file.
    with state.bulk_writes():
        before = state.path.stat().st_size
        with state.first_round("o"):
            with state.transaction():
                state.ingest("o", [gu(ID(i), "N" * 400) for i in range(3000)])
            assert state.path.stat().st_size == before  # still all in the WAL
        assert state.path.stat().st_size > before + 1_000_000
        assert _steady_index(state)
    rows = sqlite3.connect(state.path).execute("SELECT count(*) FROM users").fetchone()
    assert rows == (3000,)


def test_a_first_round_killed_midway_gets_its_index_back(tmp_path):
    path = tmp_path / "state.db"
    script = (
        "import os, sys\n"
        "from cardsync.state import open_state\n"
        "s = open_state(sys.argv[1])\n"
        "with s.first_round('o'):\n"
        "    os._exit(9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], check=False)
    assert done.returncode == 9
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name = 'users_steady'"
                       ).fetchone() == (0,)
    raw.close()
    again = open_state(path)
    assert _steady_index(again)
    again.close()


def test_ledger_hash_is_the_hash_of_the_mirror_row_it_shows(state):
    # Planning finds current cards by comparing the two hashes.
    user = gu(ID(1), "Grace")
    with state.transaction():
        state.ingest("o", [user])
        state.record_card("o", ID(1), "c1", "https://x/o/c1/", user.person, "fp", True, {})
        state.record_card("o", ID(9), "c9", "https://x/o/c9/", Person(display_name="No row"),
                          "fp", True, {})
    hashes = dict(state.db.execute("SELECT user_id, hash FROM cards").fetchall())
    assert hashes[ID(1)] == user.hash
    assert hashes[ID(9)] == content_hash(person_to_json(Person(display_name="No row")))


def test_bulk_writes_restore_checkpointing(state):
    with state.bulk_writes():
        assert state.db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        with state.transaction():
            state.ingest("o", [gu(ID(1))])
    assert state.db.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)


def test_the_state_opens_at_once_while_a_first_round_is_being_written(tmp_path):
    # `cardsync status` during an initial sync: the round holds the write lock with the
    # planning index dropped; opening the state must neither wait for it nor fail.
    path = tmp_path / "state.db"
    writer = open_state(path)
    with writer.first_round("o"):
        writer.db.begin()
        writer.ingest("o", [gu(ID(1))])
        started = time.monotonic()
        reader = open_state(path)
        assert time.monotonic() - started < 2
        assert reader.counts("o")["users"] == 0  # the round is not committed yet
        reader.close()
        writer.db.commit()
    assert _steady_index(writer)
    writer.close()
