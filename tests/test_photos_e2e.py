"""Profile photos end to end: the real msgraph-sdk and azure-identity clients against the
Graph emulator ($batch included), the real SQLite state and the real local site."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import vobject
from PIL import Image, ImageDraw

from cardsync import service
from cardsync.emulator import batch as emu_batch
from cardsync.emulator import graph as emu_graph
from cardsync.sync import Reporter, exit_code
from e2e_support import Graph, start_graph

PHOTOS_ON = "\n[organizations.photos]\nenabled = true\n"
INITIALS = 'class="avatar avatar-initials"'  # the classic template's avatar


@pytest.fixture
def graph(tmp_path, monkeypatch):
    yield from start_graph(tmp_path, monkeypatch, page_size=50)


@dataclass(frozen=True)
class Seen:
    """One Graph request as the emulator saw it: a batch item or a plain request."""

    path: str
    status: int
    client_id: str | None
    in_batch: bool

    @property
    def kind(self) -> str:
        if "/photo" in self.path:
            return "photo/$value" if self.path.endswith("$value") else "photo"
        return self.path


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def clear(self) -> None:
        self.seen.clear()

    def items(self, kind: str | None = None) -> list[Seen]:
        return [s for s in self.seen if s.in_batch and (kind is None or s.kind == kind)]

    def plain(self) -> list[Seen]:
        return [s for s in self.seen if not s.in_batch]


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    """Records every $batch item and every plain Graph request with the app that sent it
    (the emulator's request log only sees the POST /$batch)."""
    rec = Recorder()
    authenticate, run_item = emu_graph.authenticate, emu_batch._run_item

    def recording_auth(emu: Any, request: Any) -> Any:
        caller = authenticate(emu, request)
        app = getattr(caller, "app", None)
        if not request.path.endswith("/$batch"):
            rec.seen.append(Seen(request.path, 0, app and app.client_id, False))
        return caller

    def recording_item(caller: Any, outer: Any, item: dict[str, Any]) -> dict[str, Any]:
        answer = run_item(caller, outer, item)
        rec.seen.append(Seen(item["url"], answer["status"], caller.app.client_id, True))
        return answer

    monkeypatch.setattr(emu_graph, "authenticate", recording_auth)
    monkeypatch.setattr(emu_batch, "authenticate", recording_auth)
    monkeypatch.setattr(emu_batch, "_run_item", recording_item)
    return rec


class Events(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def event(self, org: str, message: str) -> None:
        self.lines.append(message)

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


def picture(hue: int, size: tuple[int, int] = (480, 420)) -> bytes:
    """A distinct, non-square JPEG."""
    image = Image.new("RGB", size, ((hue * 37) % 256, (hue * 91) % 256, 180))
    w, h = size
    ImageDraw.Draw(image).ellipse((w // 4, h // 4, w * 3 // 4, h * 3 // 4), fill="white")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def run(graph: Graph, events: Events | None = None) -> Any:
    [outcome] = service.run(graph.config(), reporter=events or Events())
    assert outcome.result == "success", outcome.error
    return outcome


def folders(graph: Graph) -> dict[str, Path]:
    """user id -> the card's folder."""
    with sqlite3.connect(graph.dir / "state.db") as db:
        rows = db.execute("SELECT user_id, files FROM cards").fetchall()
    return {uid: Path(json.loads(files)["html"]).parent for uid, files in rows}


def photo_rows(graph: Graph) -> dict[str, tuple[str | None, str | None]]:
    with sqlite3.connect(graph.dir / "state.db") as db:
        rows = db.execute("SELECT user_id, etag, error FROM photos").fetchall()
    return {uid: (etag, error) for uid, etag, error in rows}


def site_snapshot(graph: Graph) -> dict[Path, tuple[bytes, int]]:
    site = graph.dir / "site"
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in site.rglob("*") if p.is_file()}


def vcard_photo(folder: Path) -> bytes | None:
    card = vobject.readOne((folder / "card.vcf").read_text(encoding="utf-8"))
    photo = card.contents.get("photo")
    if not photo:
        return None
    assert photo[0].params["TYPE"] == ["JPEG"]
    return photo[0].value


def assert_photo_card(folder: Path, web_size: int = 400) -> None:
    """The page shows photo.jpg (square, never enlarged); the vCard embeds a 150 px JPEG."""
    page = (folder / "index.html").read_text()
    assert 'src="photo.jpg?v=' in page and INITIALS not in page
    with Image.open(folder / "photo.jpg") as web:
        assert (web.format, web.size) == ("JPEG", (web_size, web_size))
    thumb = vcard_photo(folder)
    assert thumb is not None
    with Image.open(io.BytesIO(thumb)) as image:
        assert (image.format, image.size) == ("JPEG", (150, 150))


def assert_avatar_card(folder: Path) -> None:
    page = (folder / "index.html").read_text()
    assert INITIALS in page and "photo.jpg" not in page
    assert not (folder / "photo.jpg").exists()
    assert vcard_photo(folder) is None


# -- tests ------------------------------------------------------------------------------------


def test_photos_present_and_absent(graph, recorder):
    ids = graph.add_sample(6)
    for i, uid in enumerate(ids[:4]):
        graph.tenant.set_photo(uid, picture(i))
    graph.write_config(extra=PHOTOS_ON)
    events = Events()
    outcome = run(graph, events)
    assert outcome.counts()["create_card"] == 6
    cards = folders(graph)
    for uid in ids[:4]:
        assert_photo_card(cards[uid])
    for uid in ids[4:]:
        assert_avatar_card(cards[uid])  # 404: initials, never a broken image
    # one metadata request per user, one download per photo, 20 to a batch
    assert sorted(s.status for s in recorder.items("photo")) == [200] * 4 + [404] * 2
    assert len(recorder.items("photo/$value")) == 4
    assert all(not s.path.startswith("http") for s in recorder.items())  # relative URLs
    assert graph.emu.stats()["$batch"] == 2
    assert events.matching("photos: checked 6 of 6 users")


def test_nothing_changed_downloads_nothing_and_rewrites_nothing(graph, recorder):
    ids = graph.add_sample(8)
    for i, uid in enumerate(ids[:5]):
        graph.tenant.set_photo(uid, picture(i))
    graph.write_config(extra=PHOTOS_ON)
    run(graph)
    before = site_snapshot(graph)
    recorder.clear()
    outcome = run(graph)
    assert outcome.actions == []
    assert recorder.items("photo/$value") == []
    assert len(recorder.items("photo")) == 1  # the rolling slice: ceil(8 / (7 days x 36))
    assert site_snapshot(graph) == before


def test_changed_and_removed_photos_republish_only_those_cards(graph, recorder):
    ids = graph.add_sample(6)
    for i, uid in enumerate(ids[:4]):
        graph.tenant.set_photo(uid, picture(i))
    # refresh_days x cycles a day = 1: every cycle re-checks everybody
    graph.write_config(
        extra=PHOTOS_ON + "refresh_days = 1\n\n[schedule]\ninterval_minutes = 1440\n"
    )
    run(graph)
    cards = folders(graph)
    old = (cards[ids[0]] / "photo.jpg").read_bytes()
    before = site_snapshot(graph)

    graph.tenant.set_photo(ids[0], picture(40))  # changed
    graph.tenant.set_photo(ids[1], None)  # removed
    graph.tenant.set_photo(ids[4], picture(50))  # added
    recorder.clear()
    outcome = run(graph)
    reasons = {a.user_id: (a.kind, a.reason) for a in outcome.actions}
    assert reasons == {
        ids[0]: ("update_card", "profile photo changed"),
        ids[1]: ("update_card", "profile photo removed"),
        ids[4]: ("update_card", "profile photo added"),
    }
    assert_photo_card(cards[ids[0]])
    assert (cards[ids[0]] / "photo.jpg").read_bytes() != old
    assert_avatar_card(cards[ids[1]])
    assert_photo_card(cards[ids[4]])
    assert len(recorder.items("photo")) == 6
    assert len(recorder.items("photo/$value")) == 2  # only the new photos are downloaded
    after = site_snapshot(graph)
    untouched = [uid for uid in ids if uid not in reasons]
    for uid in untouched:
        for path in before:
            if path.parent == cards[uid]:
                assert after[path] == before[path]


def test_corrupt_bytes_keep_the_last_good_photo(graph, recorder):
    ids = graph.add_sample(4)
    good = picture(3)
    graph.tenant.set_photo(ids[0], good)
    graph.tenant.set_photo(ids[1], picture(5)[:900])  # truncated: Graph serves it as is
    graph.write_config(
        extra=PHOTOS_ON + "refresh_days = 1\n\n[schedule]\ninterval_minutes = 1440\n"
    )
    events = Events()
    run(graph, events)
    cards = folders(graph)
    assert_photo_card(cards[ids[0]])
    assert_avatar_card(cards[ids[1]])  # no good photo yet: initials
    upn = graph.tenant.user(ids[1])["userPrincipalName"]
    assert len(events.matching(upn)) == 1 and events.matching("showing initials")
    kept = (cards[ids[0]] / "photo.jpg").read_bytes()

    graph.tenant.set_photo(ids[0], good[: len(good) // 3])
    result = graph.cli("run")
    assert result.returncode == 0, result.stderr
    assert "keeping the previous photo" in result.stderr
    assert graph.tenant.user(ids[0])["userPrincipalName"] in result.stderr
    assert (cards[ids[0]] / "photo.jpg").read_bytes() == kept
    assert_photo_card(cards[ids[0]])
    etag, error = photo_rows(graph)[ids[0]]
    assert etag is not None and error.startswith("unreadable image")

    recorder.clear()
    outcome = run(graph)  # the same unusable photos are not downloaded again
    assert outcome.actions == [] and exit_code([outcome]) == 0
    assert len(recorder.items("photo")) == 4 and recorder.items("photo/$value") == []


def test_batch_items_throttled_are_retried_until_every_photo_arrives(graph, recorder):
    ids = graph.add_sample(30)
    with_photo = ids[:24]
    for i, uid in enumerate(with_photo):
        graph.tenant.set_photo(uid, picture(i, (200, 200)))
    graph.write_config(extra=PHOTOS_ON)
    graph.emu.faults.throttle(probability=0.3, status=429, retry_after=1, seed=7)
    events = Events()
    run(graph, events)
    graph.emu.faults.clear()
    throttled = [s for s in recorder.items() if s.status == 429]
    assert len(throttled) >= 5
    # every user's photo was finally answered, and every photo downloaded
    final = {}
    for s in recorder.items("photo"):
        final[s.path] = s.status
    assert sorted(final.values()) == [200] * 24 + [404] * 6
    etags = photo_rows(graph)
    assert {uid for uid, (etag, _) in etags.items() if etag} == set(with_photo)
    assert all(error is None for _, error in etags.values())
    cards = folders(graph)
    assert all((cards[uid] / "photo.jpg").exists() for uid in with_photo)
    assert events.matching("throttled and retried")


def test_at_most_four_batches_are_in_flight(graph, monkeypatch):
    graph.add_sample(100)  # no photos: 100 metadata requests, 5 batches
    graph.write_config(extra=PHOTOS_ON)
    lock = threading.Lock()
    active = peak = 0
    handle = emu_batch.handle

    def slow_handle(emu: Any, request: Any) -> Any:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            time.sleep(0.05)  # keep each batch open long enough to overlap the others
            return handle(emu, request)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(emu_batch, "handle", slow_handle)
    run(graph)
    assert graph.emu.stats()["$batch"] == 5
    assert 2 <= peak <= 4


def test_missing_permission_warns_once_and_publishes_without_photos(graph, monkeypatch):
    ids = graph.add_sample(45)  # three batches, all answered 403
    for i, uid in enumerate(ids):
        graph.tenant.set_photo(uid, picture(i, (160, 160)))
    unconsented = graph.tenant.add_app(roles=())
    monkeypatch.setenv("PHOTO_SECRET", unconsented.secret)
    graph.write_config(
        extra=PHOTOS_ON + f'client_id = "{unconsented.client_id}"\n'
        'client_secret = "${PHOTO_SECRET}"\n'
    )
    events = Events()
    outcome = run(graph, events)
    assert outcome.counts()["create_card"] == 45
    warnings = events.matching("ProfilePhoto.Read.All")
    assert len(warnings) == 1
    assert "403" in warnings[0] and "admin consent" in warnings[0]
    assert unconsented.secret not in " ".join(events.lines)
    cards = folders(graph)
    assert all(not (folder / "photo.jpg").exists() for folder in cards.values())


def test_separate_photo_credentials_are_used_for_photo_requests_only(graph, recorder, monkeypatch):
    ids = graph.add_sample(5)
    for i, uid in enumerate(ids[:3]):
        graph.tenant.set_photo(uid, picture(i))
    photo_app = graph.tenant.add_app(roles=("ProfilePhoto.Read.All",), display_name="photos")
    monkeypatch.setenv("PHOTO_SECRET", photo_app.secret)
    graph.write_config(
        extra=PHOTOS_ON + f'tenant_id = "{graph.tenant.id}"\nclient_id = "{photo_app.client_id}"\n'
        'client_secret = "${PHOTO_SECRET}"\n'
    )
    run(graph)
    assert {s.client_id for s in recorder.items()} == {photo_app.client_id}
    assert {s.client_id for s in recorder.plain()} == {graph.app.client_id}
    assert len(recorder.items("photo/$value")) == 3
    tokens = [r for r in graph.emu.requests if r.kind == "token"]
    assert len(tokens) == 2  # one per app registration
    cards = folders(graph)
    for uid in ids[:3]:
        assert_photo_card(cards[uid])


def test_rolling_refresh_finds_a_photo_change_within_the_window(graph, recorder):
    ids = graph.add_sample(12)
    for i, uid in enumerate(ids):
        graph.tenant.set_photo(uid, picture(i, (200, 200)))
    # 4 cycles a day and refresh_days = 1: each cycle re-checks ceil(12 / 4) = 3 users
    graph.write_config(extra=PHOTOS_ON + "refresh_days = 1\n\n[schedule]\ninterval_minutes = 360\n")
    run(graph)
    cards = folders(graph)
    hidden = ids[-1]  # whose photo changes without any users/delta change
    moved = ids[5]  # who changes job title: checked because the pull returns them
    graph.tenant.set_photo(hidden, picture(99, (200, 200)))
    graph.tenant.update_user(moved, jobTitle="Photographer")
    checked: list[int] = []
    found_in = None
    for cycle in range(4):
        recorder.clear()
        outcome = run(graph)
        checked.append(len(recorder.items("photo")))
        if any(
            a.user_id == hidden and a.reason == "profile photo changed" for a in outcome.actions
        ):
            found_in = cycle
            assert [s.path for s in recorder.items("photo/$value")] == [
                f"/users/{hidden}/photo/$value"
            ]
        else:
            assert recorder.items("photo/$value") == []
    assert checked == [4, 3, 3, 3]  # the slice, plus the user the pull returned
    assert found_in is not None  # within refresh_days
    assert_photo_card(cards[hidden], web_size=200)


def test_dry_run_reads_photos_but_keeps_nothing(graph):
    ids = graph.add_sample(3)
    graph.tenant.set_photo(ids[0], picture(1))
    graph.write_config(extra=PHOTOS_ON)
    [outcome] = service.run(graph.config(), dry_run=True, reporter=Events())
    assert outcome.result == "success"
    creates = [a for a in outcome.actions if a.kind == "create_card"]
    assert [a.card.photo is not None for a in creates].count(True) == 1
    assert photo_rows(graph) == {}
    assert not (graph.dir / "site").exists() or not any((graph.dir / "site").rglob("*.jpg"))


def test_turning_photos_off_removes_them_from_cards(graph):
    ids = graph.add_sample(3)
    graph.tenant.set_photo(ids[0], picture(1))
    graph.write_config(extra=PHOTOS_ON)
    run(graph)
    graph.write_config()
    outcome = run(graph)
    assert [(a.user_id, a.reason) for a in outcome.actions] == [(ids[0], "profile photo removed")]
    assert_avatar_card(folders(graph)[ids[0]])
    assert photo_rows(graph) == {}
    assert os.environ.get("E2E_SECRET")


def test_refresh_of_one_user_checks_only_that_user(graph, recorder):
    from dataclasses import replace

    from cardsync.config import PhotosConfig
    from cardsync.photos import PhotoSync
    from cardsync.state import open_state

    ids = graph.add_sample(6)
    graph.tenant.set_photo(ids[2], picture(2))
    graph.write_config()  # photos off: nobody has been checked
    run(graph)
    config = graph.config()
    org = replace(config.organizations[0], photos=PhotosConfig(enabled=True))
    photos = PhotoSync(config, Events())
    state = open_state(config.state.path)
    try:
        photos.refresh(org, state, {ids[2]}, False, rolling=False)
    finally:
        photos.close()
        state.close()
    assert [s.path for s in recorder.items()] == [
        f"/users/{ids[2]}/photo",
        f"/users/{ids[2]}/photo/$value",
    ]
    assert set(photo_rows(graph)) == {ids[2]}
