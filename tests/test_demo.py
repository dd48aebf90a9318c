"""`cardsync demo`: the newcomer's first command works offline and shows both paths."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_writes_a_card_site_and_shows_the_incremental_path(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "cardsync", "demo", "--out", str(out), "--users", "12"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert "success (initial), pulled 12 users, create_card 12" in proc.stdout
    assert "success (incremental)" in proc.stdout
    for kind in ("create_card", "update_card", "delete_user"):
        assert kind in proc.stdout
    assert (out / "site" / "index.html").is_file()
    cards = json.loads(subprocess.run(
        [sys.executable, "-m", "cardsync", "-c", str(out / "cardsync.toml"), "cards", "list",
         "--json"], capture_output=True, text=True, timeout=60,
    ).stdout)
    assert len(cards) == 12  # 12 - 1 permanently deleted + 1 new hire
    for card in cards:
        assert (out / "site" / "contoso" / card["card_id"] / "index.html").is_file()
