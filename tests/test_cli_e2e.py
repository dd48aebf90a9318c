"""The `cardsync` command as a process, as cron runs it: exit codes, JSON shapes,
messages without tracebacks or secrets, dry runs, the run lock, and kills."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time

import pytest

from e2e_support import start_graph


@pytest.fixture
def graph(tmp_path, monkeypatch):
    yield from start_graph(tmp_path, monkeypatch, page_size=5)


def db_digest(graph) -> str:
    with sqlite3.connect(graph.dir / "state.db") as db:
        rows = []
        for table in ("users", "cards", "cursors", "runs"):
            rows.append(list(db.execute(f"SELECT * FROM {table} ORDER BY 1, 2")))
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def test_run_status_and_cards_list_json(graph):
    graph.add_sample(6)
    proc = graph.cli("run")
    assert proc.returncode == 0, proc.stderr
    assert "[contoso] success (initial)" in proc.stdout
    status = json.loads(graph.cli("status", "--json").stdout)
    [org] = status["organizations"]
    assert org["slug"] == "contoso" and org["users"] == 6 and org["cards"] == 6
    assert org["last_result"] == "success" and org["last_sync"].endswith("+00:00")
    cards = json.loads(graph.cli("cards", "list", "--json").stdout)
    assert len(cards) == 6
    for card in cards:
        assert {"org", "user_id", "user_principal_name", "display_name", "url", "files"} <= set(
            card
        )
        assert set(card["files"]) == {"html", "vcard", "qr_svg", "qr_png"}
        for path in card["files"].values():
            assert os.path.isabs(path) and os.path.exists(path)


def test_run_json_reports_every_action(graph):
    ids = graph.add_sample(4)
    proc = graph.cli("run", "--json")
    assert proc.returncode == 0, proc.stderr
    [org] = json.loads(proc.stdout)
    assert (org["org"], org["result"], org["mode"], org["error"]) == (
        "contoso", "success", "initial", None
    )
    assert org["counts"]["create_card"] == 4
    assert sorted(a["user_id"] for a in org["actions"]) == sorted(ids)
    assert all(a["action"] == "create_card" and a["card_id"] for a in org["actions"])
    graph.tenant.update_user(ids[0], jobTitle="JSON Officer")
    [again] = json.loads(graph.cli("run", "--json").stdout)
    assert again["mode"] == "incremental"
    assert [(a["action"], a["user_id"], a["changed"]) for a in again["actions"]] == [
        ("update_card", ids[0], ["job_title"])
    ]
    [idle] = json.loads(graph.cli("run", "--json").stdout)
    assert idle["actions"] == []


def test_diff_before_the_first_run_plans_everything_and_keeps_nothing(graph):
    # A first round into an empty mirror drops the planning index while it stores; in a
    # dry run all of that is rolled back, the index included.
    ids = graph.add_sample(4)
    proc = graph.cli("diff", "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(a["user_id"] for a in json.loads(proc.stdout)) == sorted(ids)
    with sqlite3.connect(graph.dir / "state.db") as db:
        assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM cursors WHERE delta_link IS NOT NULL"
                          ).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'users_steady'"
                          ).fetchone() == (1,)
    assert not (graph.dir / "site").exists() or not any((graph.dir / "site").rglob("*.vcf"))
    assert graph.cli("run").returncode == 0
    assert json.loads(graph.cli("diff", "--json").stdout) == []


def test_diff_changes_nothing_and_reports_actions(graph):
    ids = graph.add_sample(5)
    assert graph.cli("run").returncode == 0
    graph.tenant.update_user(ids[0], jobTitle="Head of Diffs")
    graph.tenant.hard_delete(ids[1])
    before = db_digest(graph)
    site_before = sorted(p.name for p in (graph.dir / "site" / "contoso").iterdir())

    proc = graph.cli("diff", "--json")
    assert proc.returncode == 0, proc.stderr
    actions = json.loads(proc.stdout)
    assert sorted((a["action"], a["user_id"]) for a in actions) == sorted(
        [("update_card", ids[0]), ("delete_user", ids[1])]
    )
    for a in actions:
        assert {"org", "action", "user_id", "user_principal_name", "reason"} <= set(a)
    assert db_digest(graph) == before
    assert sorted(p.name for p in (graph.dir / "site" / "contoso").iterdir()) == site_before

    assert graph.cli("diff", "--exit-code").returncode == 2
    assert graph.cli("run").returncode == 0
    assert graph.cli("diff", "--exit-code").returncode == 0


def test_bad_config_lists_every_problem_without_traceback(graph):
    graph.config_path.write_text(
        '[backend]\ntype = "local"\noutput = 5\n\n[[organizations]]\nslug = "Bad Slug"\n'
        '[organizations.entra]\ntenant_id = "t"\nclient_id = "c"\nclient_secrte = "x"\n'
    )
    proc = graph.cli("run")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "backend.output" in proc.stderr
    assert "organizations[0].slug" in proc.stderr
    assert "did you mean 'client_secret'" in proc.stderr


def test_wrong_secret_is_one_clear_line_and_never_printed(graph):
    graph.add_sample(2)
    graph.write_config(secret="Wr0ng-Secret-Value-123")
    proc = graph.cli("run")
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert "Wr0ng-Secret-Value-123" not in out
    assert "secret" in out.lower()
    assert graph.app.secret not in out
    status = json.loads(graph.cli("status", "--json").stdout)["organizations"][0]
    assert status["last_result"] == "failed"


def test_missing_consent_names_the_permission(graph, tmp_path):
    app = graph.tenant.add_app(roles=())
    graph.app = app
    graph.write_config()
    proc = graph.cli("run")
    assert proc.returncode == 1
    assert "User.Read.All" in proc.stdout + proc.stderr


def test_unreachable_graph_host(graph):
    text = graph.config_path.read_text()
    port = graph.server.url.rsplit(":", 1)[1]
    graph.config_path.write_text(text.replace(f"127.0.0.1:{port}", "127.0.0.1:9"))
    proc = graph.cli("run")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "127.0.0.1" in proc.stdout + proc.stderr


def test_second_run_is_refused_while_one_holds_the_lock(graph):
    graph.add_sample(30)
    graph.emu.faults.page_delay = 0.2
    first = graph.popen("run")
    try:
        deadline = time.time() + 30
        while not graph.graph_requests("/users/delta") and time.time() < deadline:
            time.sleep(0.05)
        second = graph.cli("run")
        assert second.returncode == 1
        assert "another cardsync run is in progress" in second.stderr
    finally:
        first.wait(timeout=120)
    assert first.returncode == 0


@pytest.mark.parametrize("phase", ["pull", "apply", "apply-in-workers"])
def test_kill_at_any_point_then_rerun_completes_without_duplicates(graph, phase, monkeypatch):
    if phase == "apply-in-workers":  # cards rendered by worker processes, killed with it
        monkeypatch.setenv("CARDSYNC_WORKERS", "2")
        phase = "apply"
    ids = graph.add_sample(120 if phase == "apply" else 40)
    if phase == "pull":
        graph.emu.faults.page_delay = 0.1
    proc = graph.popen("run")
    deadline = time.time() + 60
    org_dir = graph.dir / "site" / "contoso"
    while time.time() < deadline and proc.poll() is None:
        if phase == "pull" and len(graph.graph_requests("/users/delta")) >= 3:
            break
        if phase == "apply" and org_dir.exists() and len(list(org_dir.iterdir())) >= 20:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    graph.emu.faults.page_delay = 0

    rerun = graph.cli("run")
    assert rerun.returncode == 0, rerun.stderr
    with sqlite3.connect(graph.dir / "state.db") as db:
        rows = db.execute("SELECT user_id, card_id FROM cards").fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)
    dirs = sorted(p.name for p in org_dir.iterdir() if p.is_dir())
    assert dirs == sorted(r[1] for r in rows)  # one folder per card, none twice
    leftovers = [p for p in (graph.dir / "site").rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    assert graph.cli("diff", "--exit-code").returncode == 0


def test_ctrl_c_during_the_pull_exits_130_and_a_rerun_completes(graph):
    # The Graph source's event loop runs on the main thread, so Ctrl-C lands in it
    # while it waits for a page: the run stops at once, cleanly, with nothing stored
    # half-way that the next run would trip over.
    ids = graph.add_sample(40)
    graph.emu.faults.page_delay = 0.2
    proc = graph.popen("run")
    deadline = time.time() + 60
    while time.time() < deadline and len(graph.graph_requests("/users/delta")) < 3:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - interrupted < 5
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in out + err and "Traceback" not in out + err, (out, err)
    graph.emu.faults.page_delay = 0
    rerun = graph.cli("run")
    assert rerun.returncode == 0, rerun.stderr
    with sqlite3.connect(graph.dir / "state.db") as db:
        cards = sorted(r[0] for r in db.execute("SELECT user_id FROM cards"))
    assert cards == sorted(ids)
    assert graph.cli("diff", "--exit-code").returncode == 0
