"""`cardsync run --daemon`: syncs at start, keeps running, and stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from e2e_support import start_graph


@pytest.fixture
def graph(tmp_path, monkeypatch):
    yield from start_graph(tmp_path, monkeypatch, page_size=5)


def test_daemon_syncs_at_start_and_stops_on_sigterm(graph):
    ids = graph.add_sample(6)
    proc = graph.popen("run", "--daemon")
    try:
        deadline = time.time() + 60
        count = 0
        while time.time() < deadline and count < len(ids):
            time.sleep(0.2)
            if (graph.dir / "state.db").exists():
                with sqlite3.connect(graph.dir / "state.db") as db:
                    try:
                        count = db.execute("SELECT count(*) FROM cards").fetchone()[0]
                    except sqlite3.OperationalError:
                        count = 0
        assert count == len(ids)
        assert proc.poll() is None  # still running: it waits for the next interval
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "syncing every 40 minutes" in out
    assert "[contoso] success (initial)" in out
    assert "stopping" in out
